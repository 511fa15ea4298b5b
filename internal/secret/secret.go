// Package secret keeps mmconnect's secrets in their place: it seals tokens
// at rest with AES-256-GCM under named keys, checks API keys without leaking
// which one matched, and creates the key files a single-node install needs.
package secret

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// KeySize is the size of an encryption key: AES-256.
const KeySize = 32

// sealedPrefix starts every sealed value and names the format version, so a
// future format can be told apart without a migration.
const sealedPrefix = "mmc1."

// ErrUnknownKey: a value was sealed with a key this Sealer does not hold.
var ErrUnknownKey = connection.ErrSealingKeyMissing

// ErrCorrupt: a sealed value is malformed or fails authentication.
var ErrCorrupt = errors.New("sealed value is corrupt or was altered")

// Sealer implements connection.Sealer. Sealed values read
// "mmc1.<key id>.<base64url(nonce|ciphertext)>"; the key id lets keys rotate:
// new values use the primary key, old ones open with whichever key sealed them.
type Sealer struct {
	primary string
	aeads   map[string]cipher.AEAD
}

var _ connection.Sealer = (*Sealer)(nil)

// NewSealer takes the primary key first, then older keys still needed to open.
func NewSealer(primary []byte, older ...[]byte) (*Sealer, error) {
	s := &Sealer{aeads: map[string]cipher.AEAD{}}
	for i, k := range append([][]byte{primary}, older...) {
		if len(k) != KeySize {
			return nil, fmt.Errorf("encryption key %d is %d bytes, want %d", i, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		id := KeyID(k)
		if i == 0 {
			s.primary = id
		}
		s.aeads[id] = aead
	}
	return s, nil
}

// KeyID names a key without revealing it: the first 8 hex digits of the
// SHA-256 of a domain-separated input.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("mmconnect key id\x00"), key...))
	return hex.EncodeToString(sum[:4])
}

// Primary implements connection.Sealer.
func (s *Sealer) Primary() string { return s.primary }

// KeyIDs lists the ids of every key this Sealer holds, primary first.
func (s *Sealer) KeyIDs() []string {
	out := []string{s.primary}
	for id := range s.aeads {
		if id != s.primary {
			out = append(out, id)
		}
	}
	sort.Strings(out[1:])
	return out
}

// SealedWith implements connection.Sealer: the key id in a sealed value.
func (s *Sealer) SealedWith(sealed []byte) string {
	rest, ok := bytes.CutPrefix(sealed, []byte(sealedPrefix))
	if !ok {
		return ""
	}
	id, _, ok := bytes.Cut(rest, []byte("."))
	if !ok {
		return ""
	}
	return string(id)
}

// Seal encrypts plaintext with a fresh random nonce.
func (s *Sealer) Seal(plaintext, associatedData []byte) ([]byte, error) {
	aead := s.aeads[s.primary]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ct := aead.Seal(nonce, nonce, plaintext, associatedData)
	out := sealedPrefix + s.primary + "." + base64.RawURLEncoding.EncodeToString(ct)
	return []byte(out), nil
}

// Open decrypts a value made by Seal with the same associated data.
func (s *Sealer) Open(sealed, associatedData []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(sealed, []byte(sealedPrefix))
	if !ok {
		return nil, ErrCorrupt
	}
	id, body, ok := bytes.Cut(rest, []byte("."))
	if !ok {
		return nil, ErrCorrupt
	}
	aead, ok := s.aeads[string(id)]
	if !ok {
		return nil, fmt.Errorf("key %s: %w", id, ErrUnknownKey)
	}
	ct, err := base64.RawURLEncoding.DecodeString(string(body))
	if err != nil || len(ct) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrCorrupt
	}
	plain, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], associatedData)
	if err != nil {
		return nil, ErrCorrupt
	}
	return plain, nil
}

// ParseKey decodes a base64 (standard or URL alphabet, padded or not)
// encryption key and checks its size.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("decodes to %d bytes, want %d", len(k), KeySize)
			}
			return k, nil
		}
	}
	return nil, errors.New("is not base64")
}

// NewEncryptionKey returns a fresh key as base64.
func NewEncryptionKey() string {
	return base64.StdEncoding.EncodeToString(randomBytes(KeySize))
}

// NewAPIKey returns a fresh API key: "mmk_" and 256 random bits.
func NewAPIKey() string {
	return "mmk_" + base64.RawURLEncoding.EncodeToString(randomBytes(32))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("secret: no randomness: " + err.Error()) // crypto/rand never fails on supported systems
	}
	return b
}

// ErrEmptyKeyFile: a key file exists but holds nothing.
var ErrEmptyKeyFile = errors.New("the key file is empty")

// ReadKeyFile returns the trimmed contents of a key file. Errors: one
// wrapping fs.ErrNotExist when there is none; ErrEmptyKeyFile (with how to
// recover) when it is empty.
func ReadKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: %w (a first start cut short?): if the database holds no connections yet, delete it and start again; "+
			"otherwise restore the key from your backup", path, ErrEmptyKeyFile)
	}
	return v, nil
}

// CreateKeyFile writes value to path with mode 0600, whole or not at all:
// into a temporary file in the same directory, synced, then linked into
// place, which fails if the file appeared meanwhile (another process won:
// its value is returned, with created false), then the directory is
// synced. A full disk leaves no file behind, never an empty one.
func CreateKeyFile(path, value string) (v string, created bool, err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", false, err
	}
	if _, err := tmp.WriteString(value + "\n"); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			v, err := ReadKeyFile(path)
			return v, false, err
		}
		return "", false, err
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return "", false, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return value, true, nil
}

// LoadOrCreateFile returns the key in path, creating it with generate()
// when there is none. Errors: ReadKeyFile's and CreateKeyFile's.
func LoadOrCreateFile(path string, generate func() string) (value string, created bool, err error) {
	v, err := ReadKeyFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return CreateKeyFile(path, generate())
	}
	return v, false, err
}

// KeySet checks presented API keys. It keeps only SHA-256 digests and
// compares a candidate against every one in constant time, so neither the
// length of a key nor which key matched shows in the timing. Each key has
// a name, for the audit trail and rate limits.
type KeySet struct {
	digests [][sha256.Size]byte
	names   []string
}

// keyNamePattern is what may stand before the colon of "name:key".
var keyNamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ParseNamedKey splits MMCONNECT_API_KEYS's "name:key" form. A plain key
// is named "key-" and the first 8 hex digits of its SHA-256, so its name
// stays the same when other keys are added or removed.
func ParseNamedKey(s string) (name, key string) {
	if n, k, ok := strings.Cut(s, ":"); ok && keyNamePattern.MatchString(n) {
		return n, k
	}
	sum := sha256.Sum256([]byte(s))
	return "key-" + hex.EncodeToString(sum[:4]), s
}

// NewKeySet hashes the given keys, each plain or "name:key".
func NewKeySet(keys []string) *KeySet {
	ks := &KeySet{}
	for _, k := range keys {
		name, key := ParseNamedKey(k)
		ks.digests = append(ks.digests, sha256.Sum256([]byte(key)))
		ks.names = append(ks.names, name)
	}
	return ks
}

// Match reports whether candidate is one of the keys.
func (ks *KeySet) Match(candidate string) bool {
	_, ok := ks.Identify(candidate)
	return ok
}

// Identify returns the name of the key candidate is, comparing against
// every key whatever matches.
func (ks *KeySet) Identify(candidate string) (name string, ok bool) {
	d := sha256.Sum256([]byte(candidate))
	found := -1
	for i := range ks.digests {
		eq := subtle.ConstantTimeCompare(d[:], ks.digests[i][:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return "", false
	}
	return ks.names[found], true
}
