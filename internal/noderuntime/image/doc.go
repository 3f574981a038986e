// Package image is the local node's OCI image store: it pulls images for the
// pods the node runs, unpacks their layers once, and shows an image's files as
// the merged view a container would see. Its main user is KubeVirt's
// containerDisk, an image holding exactly one disk file under /disk/.
//
// # On-disk layout
//
// Everything lives under the root given to [New]:
//
//	layers/<diffID-hex>/          one unpacked layer (an uncompressed tar's tree,
//	                              whiteout files kept as they are); shared by
//	                              every image that has the layer
//	images/<manifest-hex>.json    one image: manifest and config digests, the
//	                              config, the ordered diffIDs (bottom to top)
//	                              and the references it was pulled as
//	refs.json                     reference ("127.0.0.1:5000/disk:v1") →
//	                              manifest digest; the source of truth for
//	                              what a reference means locally
//	tmp/                          layers being unpacked; emptied by New and GC
//
// Compressed layer blobs are not kept: a layer is streamed from the registry,
// decompressed, checked against its diffID and unpacked in one pass.
//
// # Crash safety
//
// A layer is unpacked into tmp/ (same filesystem), flushed with syncfs(2) and
// only then renamed to layers/<hex>, so a layer directory that exists is
// complete. An image record is written after all its layers exist and
// refs.json after the record, each by writing a temporary file, fsyncing it
// and renaming it over the old one. A crash can therefore leave only garbage
// (an unpacked layer or a record nothing names) that [Store.GC] removes,
// never a reference to a half-written image.
//
// # Unpacking
//
// Tar entries are written through an [os.Root] on the layer directory and
// are checked first: absolute names, names escaping with "..", entries whose
// parent directory is a symbolic link and hard links to anything outside the
// layer are rejected, failing the pull. Regular files keep their mode
// (including setuid/setgid/sticky) and modification time, and are written
// sparsely: runs of zeros (64 KiB blocks) become holes, so a raw disk image
// costs only its data. Directories, symbolic links (target kept verbatim,
// never followed) and hard links (within the layer) are created faithfully.
// Owners are kept when the store runs as root and left to the current user
// otherwise. Device nodes and FIFOs are skipped (pods of this runtime do not
// need them), as are extended attributes.
//
// # Merged view
//
// [Image.Lookup] and [Image.ContainerDisk] resolve a path through the layers
// from top to bottom the way overlayfs does with OCI layers: the topmost
// layer that has the path wins; a whiteout ".wh.<name>" hides <name> in lower
// layers; an opaque marker ".wh..wh..opq" in a directory hides the lower
// layers' content of that directory; a non-directory hides a lower
// directory of the same name. Symbolic links are not followed.
//
// # Concurrency
//
// A Store is safe for concurrent use. Pulls of images sharing a layer unpack
// it once: the second pull waits for the first (or does the work itself if
// the first was cancelled). One process owns a root: New empties tmp/.
package image
