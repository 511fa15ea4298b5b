package secret

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealerRoundTripAndTamper(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, KeySize)
	k2 := bytes.Repeat([]byte{2}, KeySize)
	s, err := NewSealer(k1)
	if err != nil {
		t.Fatal(err)
	}
	token := []byte("abcdefghijklmnopqrstuvwxyz")
	sealed, err := s.Seal(token, []byte("conn_a"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, token) {
		t.Fatalf("sealed value contains the plaintext: %s", sealed)
	}
	again, _ := s.Seal(token, []byte("conn_a"))
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of one value are equal: nonce reused")
	}
	got, err := s.Open(sealed, []byte("conn_a"))
	if err != nil || !bytes.Equal(got, token) {
		t.Fatalf("Open = %q, %v; want the token", got, err)
	}
	if _, err := s.Open(sealed, []byte("conn_b")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with other associated data: err = %v, want ErrCorrupt", err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-2] ^= 1
	if _, err := s.Open(flipped, []byte("conn_a")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of altered value: err = %v, want ErrCorrupt", err)
	}

	// Rotation: a sealer with a new primary still opens values of the old key.
	rotated, err := NewSealer(k2, k1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(sealed, []byte("conn_a")); err != nil || !bytes.Equal(got, token) {
		t.Fatalf("rotated Open = %q, %v", got, err)
	}
	fresh, _ := rotated.Seal(token, []byte("conn_a"))
	if _, err := s.Open(fresh, []byte("conn_a")); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old sealer opening new-key value: err = %v, want ErrUnknownKey", err)
	}
}

func TestNewSealerRejectsShortKey(t *testing.T) {
	if _, err := NewSealer(make([]byte, 16)); err == nil {
		t.Fatal("NewSealer accepted a 16-byte key")
	}
}

func TestParseKey(t *testing.T) {
	k := NewEncryptionKey()
	if b, err := ParseKey(k); err != nil || len(b) != KeySize {
		t.Fatalf("ParseKey(generated) = %d bytes, %v", len(b), err)
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ="} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestKeySet(t *testing.T) {
	a, b := NewAPIKey(), NewAPIKey()
	ks := NewKeySet([]string{a, b})
	for _, tc := range []struct {
		key  string
		want bool
	}{{a, true}, {b, true}, {a + "x", false}, {"", false}, {a[:len(a)-1], false}} {
		if got := ks.Match(tc.key); got != tc.want {
			t.Errorf("Match(key of len %d) = %v, want %v", len(tc.key), got, tc.want)
		}
	}
}

func TestLoadOrCreateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "api-key")
	v1, created, err := LoadOrCreateFile(path, NewAPIKey)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", st.Mode().Perm())
	}
	v2, created, err := LoadOrCreateFile(path, NewAPIKey)
	if err != nil || created || v2 != v1 {
		t.Fatalf("second call: %q created=%v err=%v; want the first value reused", v2, created, err)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	s, _ := NewSealer(bytes.Repeat([]byte{1}, KeySize))
	token, aad := []byte("abcdefghijkmnopqrstuvwxyza"), []byte("conn_x")
	for b.Loop() {
		sealed, _ := s.Seal(token, aad)
		if _, err := s.Open(sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKeySetMatch(b *testing.B) {
	keys := []string{NewAPIKey(), NewAPIKey(), NewAPIKey()}
	ks := NewKeySet(keys)
	for b.Loop() {
		if !ks.Match(keys[2]) {
			b.Fatal("no match")
		}
	}
}

// A full disk while the first start writes a key file leaves no file
// behind (never an empty one), and an empty file left by an older version
// is an error that says how to recover. The disk is a real, tiny tmpfs.
func TestKeyFileOnAFullDisk(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount a tmpfs (CI runs as root): %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	fill, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	fill.Write(make([]byte, 64<<10)) // fails once the 4 KiB are used
	fill.Close()

	path := filepath.Join(dir, "encryption-key")
	if _, _, err := CreateKeyFile(path, NewEncryptionKey()); err == nil {
		t.Fatal("writing a key file to a full disk succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed write left %s behind (err %v)", path, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("a failed write left files behind: %v", entries)
	}

	os.Remove(filepath.Join(dir, "fill"))
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ReadKeyFile(path)
	if !errors.Is(err, ErrEmptyKeyFile) || !strings.Contains(err.Error(), "restore the key from your backup") {
		t.Fatalf("an empty key file: %v; want ErrEmptyKeyFile saying how to recover", err)
	}
	if _, _, err := LoadOrCreateFile(path, NewEncryptionKey); !errors.Is(err, ErrEmptyKeyFile) {
		t.Fatalf("LoadOrCreateFile over an empty file: %v; want ErrEmptyKeyFile, not a new key", err)
	}
}

// Two starts racing for the first key file agree on one key.
func TestCreateKeyFileRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k")
	a, createdA, errA := CreateKeyFile(path, "first")
	b, createdB, errB := CreateKeyFile(path, "second")
	if errA != nil || errB != nil || !createdA || createdB || a != "first" || b != "first" {
		t.Fatalf("got %q %v %v and %q %v %v; want both to read the first", a, createdA, errA, b, createdB, errB)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
}

func TestNamedKeys(t *testing.T) {
	plain := NewAPIKey()
	named := NewAPIKey()
	ks := NewKeySet([]string{plain, "billing:" + named})
	if name, ok := ks.Identify(named); !ok || name != "billing" {
		t.Fatalf("named key = %q %v", name, ok)
	}
	name, ok := ks.Identify(plain)
	again, _ := NewKeySet([]string{"x:" + NewAPIKey(), plain}).Identify(plain)
	if !ok || !strings.HasPrefix(name, "key-") || len(name) != 12 || name != again {
		t.Fatalf("plain key named %q (%v), %q among other keys; want a stable key-<8 hex>", name, ok, again)
	}
	if _, ok := ks.Identify("billing:" + named); ok {
		t.Fatal("the name:key form itself was accepted as a key")
	}
}
