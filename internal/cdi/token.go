package cdi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// TokenKeySecret holds the key upload tokens are signed with, in
// namespace kubevirt, under TokenKeyField. virt-api signs with it
// (UploadTokenRequest), the upload proxy verifies.
const (
	TokenKeySecret = "cdi-upload-token-key"
	TokenKeyField  = "key"
	// TokenLifetime is how long an upload token is good for, as CDI's.
	TokenLifetime = 5 * time.Minute
)

// ErrBadToken is any token the proxy must answer 401: malformed, signed
// with another key, expired, or for another claim.
var ErrBadToken = errors.New("invalid upload token")

// TokenClaims say what one token allows: uploading to one claim until
// Expires.
type TokenClaims struct {
	Namespace string `json:"ns"`
	PVC       string `json:"pvc"`
	Expires   int64  `json:"exp"`
}

// SignToken returns base64url(claims) "." base64url(HMAC-SHA256): a token
// scoped to one claim that only holders of key can mint. (CDI uses a JWT
// signed by its apiserver; the proxy is the only reader here, so a MAC is
// enough.)
func SignToken(key []byte, c TokenClaims) (string, error) {
	if len(key) < 32 {
		return "", fmt.Errorf("token key: %d bytes, want at least 32", len(key))
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(mac(key, payload)), nil
}

// VerifyToken checks token's signature and expiry at now and returns its
// claims; every failure is ErrBadToken.
func VerifyToken(key []byte, token string, now time.Time) (TokenClaims, error) {
	payload, sig, ok := strings.Cut(token, ".")
	if !ok {
		return TokenClaims{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(key, payload)) {
		return TokenClaims{}, fmt.Errorf("%w: bad signature", ErrBadToken)
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return TokenClaims{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	var c TokenClaims
	if err := json.Unmarshal(body, &c); err != nil {
		return TokenClaims{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	if now.Unix() >= c.Expires {
		return TokenClaims{}, fmt.Errorf("%w: expired", ErrBadToken)
	}
	return c, nil
}

func mac(key []byte, payload string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// UploadPodToken is the token the upload pod of one claim (by namespace,
// name and UID) takes data with: a MAC under the upload token key, so
// virt-controller, which puts it in the pod's Secret, and the upload proxy,
// which forwards with it, both know it without sharing per-claim Secrets,
// and a new claim of the same name gets another.
func UploadPodToken(key []byte, namespace, claim, uid string) string {
	return base64.RawURLEncoding.EncodeToString(mac(key, "upload-pod\x00"+namespace+"\x00"+claim+"\x00"+uid))
}
