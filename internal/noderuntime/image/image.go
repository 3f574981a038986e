package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Disk formats ContainerDisk reports.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// qcow2Magic starts every qcow2 file.
const qcow2Magic = "QFI\xfb"

// containerDiskDir is where a containerDisk keeps its disk.
const containerDiskDir = "/disk"

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// ErrNotContainerDisk means an image does not hold exactly one disk file
// under /disk/.
var ErrNotContainerDisk = errors.New("not a containerDisk")

// Image is a pulled image whose layers are unpacked on this node.
type Image struct {
	// Reference is the normalised name it was pulled as,
	// e.g. "127.0.0.1:5000/disk:v1" or "index.docker.io/library/busybox:latest".
	Reference string
	// Digest is the manifest's digest ("sha256:…"), the platform image's
	// when the reference names an index.
	Digest string
	// ID is the config's digest, what container runtimes call the image ID.
	ID string
	// Config is the image's configuration (entrypoint, env, user …).
	Config v1.ConfigFile
	// Layers are the unpacked layer directories, bottom to top.
	Layers []string
}

// RepoDigest is the image as repository@digest, what kubelet reports as a
// container's imageID.
func (i *Image) RepoDigest() string {
	repo := i.Reference
	if r, err := name.ParseReference(i.Reference); err == nil {
		repo = r.Context().Name()
	}
	return repo + "@" + i.Digest
}

// Lookup returns the host path of the file at p (absolute or not, within the
// image) in the image's merged view. Symbolic links are not followed,
// neither along p nor at its end. A path that is absent or deleted by a
// whiteout gives an error matching fs.ErrNotExist.
func (i *Image) Lookup(p string) (string, error) {
	comps, err := splitPath(p)
	if err != nil {
		return "", err
	}
	if len(comps) == 0 {
		return "", &fs.PathError{Op: "lookup", Path: p, Err: fmt.Errorf("the image's root is no single host directory: %w", fs.ErrInvalid)}
	}
	for l := len(i.Layers) - 1; l >= 0; l-- {
		pr, err := probe(i.Layers[l], comps)
		if err != nil {
			return "", fmt.Errorf("lookup %s in image %s: %w", p, i.Reference, err)
		}
		switch pr.result {
		case present:
			return pr.host, nil
		case hidden:
			return "", &fs.PathError{Op: "lookup", Path: p, Err: fs.ErrNotExist}
		}
	}
	return "", &fs.PathError{Op: "lookup", Path: p, Err: fs.ErrNotExist}
}

// ContainerDisk returns the host path and format (FormatQCOW2 or FormatRaw)
// of the disk a containerDisk image holds: the single regular file under
// /disk/ in the merged view. Anything else is an error matching
// ErrNotContainerDisk that says what the image has instead.
func (i *Image) ContainerDisk() (diskPath, format string, err error) {
	entries, err := i.readDir(containerDiskDir)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir) {
		return "", "", i.notContainerDisk("has no directory /disk/: a containerDisk keeps exactly one disk file there")
	}
	if err != nil {
		return "", "", fmt.Errorf("image %s: %w", i.Reference, err)
	}
	var disks, others []string
	for _, n := range slices.Sorted(maps.Keys(entries)) {
		if entries[n].info.Mode().IsRegular() {
			disks = append(disks, n)
		} else {
			others = append(others, n)
		}
	}
	switch {
	case len(disks) == 0 && len(others) == 0:
		return "", "", i.notContainerDisk("has no disk under /disk/: a containerDisk needs exactly one regular file there")
	case len(disks) == 0:
		return "", "", i.notContainerDisk(fmt.Sprintf("has no disk under /disk/, only %s (not regular files): a containerDisk needs exactly one regular file there", strings.Join(others, ", ")))
	case len(disks) > 1:
		return "", "", i.notContainerDisk(fmt.Sprintf("has %d files under /disk/ (%s): a containerDisk needs exactly one", len(disks), strings.Join(disks, ", ")))
	}
	diskPath = entries[disks[0]].host
	format, err = diskFormat(diskPath)
	if err != nil {
		return "", "", fmt.Errorf("image %s: %w", i.Reference, err)
	}
	return diskPath, format, nil
}

func (i *Image) notContainerDisk(what string) error {
	return &containerDiskError{msg: fmt.Sprintf("image %s %s", i.Reference, what)}
}

type containerDiskError struct{ msg string }

func (e *containerDiskError) Error() string        { return e.msg }
func (e *containerDiskError) Is(target error) bool { return target == ErrNotContainerDisk }

// diskFormat tells qcow2 from raw by the magic at offset 0.
func diskFormat(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("detect disk format: %w", err)
	}
	defer f.Close()
	magic := make([]byte, len(qcow2Magic))
	if _, err := io.ReadFull(f, magic); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return FormatRaw, nil // too short for a qcow2 header
		}
		return "", fmt.Errorf("detect disk format of %s: %w", p, err)
	}
	if string(magic) == qcow2Magic {
		return FormatQCOW2, nil
	}
	return FormatRaw, nil
}

// splitPath cleans an in-image path into its components. Whiteout names
// are never visible.
func splitPath(p string) ([]string, error) {
	clean := strings.TrimPrefix(path.Clean("/"+p), "/")
	if clean == "" {
		return nil, nil
	}
	comps := strings.Split(clean, "/")
	for _, c := range comps {
		if strings.HasPrefix(c, whiteoutPrefix) {
			return nil, &fs.PathError{Op: "lookup", Path: p, Err: fs.ErrNotExist}
		}
	}
	return comps, nil
}

type probeResult int

const (
	absent  probeResult = iota // this layer says nothing: look lower
	hidden                     // this layer hides the path from lower layers
	present                    // this layer has it
)

type probed struct {
	result probeResult
	host   string
	info   fs.FileInfo
	// sealed: lower layers' content under the path is hidden (an opaque
	// directory on the way, or the path recreated after a whiteout).
	sealed bool
}

// probe looks for the path comps in one layer directory.
func probe(layer string, comps []string) (probed, error) {
	dir := layer
	var sealed bool
	for k, c := range comps {
		if ok, err := pathExists(filepath.Join(dir, opaqueMarker)); err != nil {
			return probed{}, err
		} else if ok {
			sealed = true
		}
		whited, err := pathExists(filepath.Join(dir, whiteoutPrefix+c))
		if err != nil {
			return probed{}, err
		}
		p := filepath.Join(dir, c)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			if whited || sealed {
				return probed{result: hidden}, nil
			}
			return probed{result: absent}, nil
		}
		if err != nil {
			return probed{}, err
		}
		if whited { // deleted below and recreated here
			sealed = true
		}
		if k == len(comps)-1 {
			return probed{result: present, host: p, info: fi, sealed: sealed}, nil
		}
		if !fi.IsDir() { // a file or link here hides a lower directory
			return probed{result: hidden}, nil
		}
		dir = p
	}
	fi, err := os.Lstat(layer)
	if err != nil {
		return probed{}, err
	}
	return probed{result: present, host: layer, info: fi}, nil
}

type dirEntry struct {
	host string
	info fs.FileInfo
}

var errNotDir = errors.New("not a directory")

// readDir lists directory p of the merged view.
func (i *Image) readDir(p string) (map[string]dirEntry, error) {
	comps, err := splitPath(p)
	if err != nil {
		return nil, err
	}
	entries := map[string]dirEntry{}
	decided := map[string]bool{} // names an upper layer has shown or deleted
	found := false
	for l := len(i.Layers) - 1; l >= 0; l-- {
		pr, err := probe(i.Layers[l], comps)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if pr.result == hidden {
			break
		}
		if pr.result == absent {
			continue
		}
		if !pr.info.IsDir() {
			if !found {
				return nil, &fs.PathError{Op: "readdir", Path: p, Err: errNotDir}
			}
			break
		}
		found = true
		des, err := os.ReadDir(pr.host)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		opaque := false
		var whiteouts []string
		for _, de := range des {
			n := de.Name()
			switch {
			case n == opaqueMarker:
				opaque = true
			case strings.HasPrefix(n, whiteoutPrefix):
				whiteouts = append(whiteouts, strings.TrimPrefix(n, whiteoutPrefix))
			case !decided[n]:
				decided[n] = true
				info, err := de.Info()
				if err != nil {
					return nil, fmt.Errorf("read %s: %w", p, err)
				}
				entries[n] = dirEntry{host: filepath.Join(pr.host, n), info: info}
			}
		}
		for _, w := range whiteouts { // a whiteout hides lower layers only
			decided[w] = true
		}
		if opaque || pr.sealed {
			break
		}
	}
	if !found {
		return nil, &fs.PathError{Op: "readdir", Path: p, Err: fs.ErrNotExist}
	}
	return entries, nil
}
