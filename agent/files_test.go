package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret.key")

	t.Run("creates with the mode, whatever the umask", func(t *testing.T) {
		// A restrictive umask (safe for concurrent tests): the certificate
		// mode must still be exactly 0644 and the key's 0600.
		old := syscall.Umask(0o077)
		defer syscall.Umask(old)
		pub := filepath.Join(dir, "cert.pem")
		for _, w := range []struct {
			path string
			mode os.FileMode
		}{{p, 0o600}, {pub, 0o644}} {
			if err := WriteFile(w.path, []byte("one"), w.mode, false); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(w.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Mode().Perm(); got != w.mode {
				t.Errorf("%s: mode %04o, want %04o", w.path, got, w.mode)
			}
		}
	})
	t.Run("refuses to overwrite and leaves the file intact", func(t *testing.T) {
		err := WriteFile(p, []byte("two"), 0o600, false)
		if !errors.Is(err, fs.ErrExist) {
			t.Fatalf("err %v, want fs.ErrExist", err)
		}
		if got, _ := os.ReadFile(p); string(got) != "one" {
			t.Errorf("content %q, want %q", got, "one")
		}
	})
	t.Run("replaces when asked", func(t *testing.T) {
		if err := WriteFile(p, []byte("three"), 0o600, true); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); string(got) != "three" {
			t.Errorf("content %q, want three", got)
		}
	})
	t.Run("refuses to write through a symlink target name", func(t *testing.T) {
		link := filepath.Join(dir, "link.key")
		if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(link, []byte("x"), 0o600, false); !errors.Is(err, fs.ErrExist) {
			t.Errorf("writing over a dangling symlink: err %v, want fs.ErrExist", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the symlink target was created")
		}
	})
	t.Run("missing directory fails cleanly", func(t *testing.T) {
		if err := WriteFile(filepath.Join(dir, "nope", "k"), []byte("x"), 0o600, false); err == nil {
			t.Error("no error writing into a missing directory")
		}
	})
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestWriteFileNoPartialReads replaces a file many times while readers
// read it: every read must be one complete version.
func TestWriteFileNoPartialReads(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cert.pem")
	versions := make([][]byte, 8)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 64<<10+i)
	}
	if err := WriteFile(p, versions[0], 0o644, false); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				got, err := os.ReadFile(p)
				if err != nil {
					bad.Add(1)
					continue
				}
				ok := false
				for _, v := range versions {
					if bytes.Equal(got, v) {
						ok = true
						break
					}
				}
				if !ok {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 200 {
		if err := WriteFile(p, versions[i%len(versions)], 0o644, true); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d reads saw a missing or partial file", n)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestReadSecretFileRefusesOpenModes(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey("p256")
	data, _ := MarshalKey(k)
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o600, true}, {0o400, true}, {0o640, false}, {0o644, false}, {0o606, false}} {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			p := writeTestFile(t, filepath.Join(dir, fmt.Sprintf("k%o", tt.mode)), data, tt.mode)
			_, err := LoadKey(p)
			if (err == nil) != tt.ok {
				t.Errorf("loadAgentKey with mode %04o: err %v, want ok=%v", tt.mode, err, tt.ok)
			}
		})
	}
}

// TestReadSecretFileRefusesNonFiles: a FIFO (which must not hang the
// reader), a directory and an oversized file are refused; a symlink to a
// 0600 file is read (the checks apply to the file opened).
func TestReadSecretFileRefusesNonFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := writeTestFile(t, filepath.Join(dir, "big"), make([]byte, 100), 0o600)
	target := writeTestFile(t, filepath.Join(dir, "secret"), []byte("s3cret"), 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path string
		ok         bool
	}{{"fifo", fifo, false}, {"directory", dir, false}, {"oversized", big, false}, {"symlink to a 0600 file", link, true}} {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := ReadSecretFile(tt.path, 64); done <- err }()
			select {
			case err := <-done:
				if (err == nil) != tt.ok {
					t.Errorf("ReadSecretFile(%s) = %v, want ok=%v", tt.name, err, tt.ok)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("ReadSecretFile(%s) hangs", tt.name)
			}
		})
	}
}

func TestChainPath(t *testing.T) {
	for _, tt := range []struct{ cert, override, want string }{
		{"agent.pem", "", "agent.chain.pem"},
		{"/etc/atr/agent.crt", "", "/etc/atr/agent.crt.chain.pem"},
		{"agent.pem", "other.pem", "other.pem"},
	} {
		if got := ChainPath(tt.cert, tt.override); got != tt.want {
			t.Errorf("ChainPath(%q, %q) = %q, want %q", tt.cert, tt.override, got, tt.want)
		}
	}
}

func TestReceiptPath(t *testing.T) {
	for _, tt := range []struct{ cert, want string }{
		{"agent.pem", "agent.receipt.json"},
		{"/etc/atr/agent.crt", "/etc/atr/agent.crt.receipt.json"},
	} {
		if got := ReceiptPath(tt.cert); got != tt.want {
			t.Errorf("ReceiptPath(%q) = %q, want %q", tt.cert, got, tt.want)
		}
	}
	cert := filepath.Join(t.TempDir(), "agent.pem")
	if err := WriteReceipt(cert, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(ReceiptPath(cert)); string(got) != "{\"a\":1}\n" {
		t.Errorf("receipt file %q", got)
	}
	if err := WriteReceipt(cert, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ReceiptPath(cert)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an empty receipt left the stale file: %v", err)
	}
	if err := WriteReceipt(cert, nil); err != nil {
		t.Errorf("removing a missing receipt: %v", err)
	}
}

func TestLoadCertificate(t *testing.T) {
	c := newTestCA(t, "test.local")
	k, _ := GenerateKey(KeyP256)
	leaf := c.Issue(t, k, "bot.acme")
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		return writeTestFile(t, filepath.Join(dir, name), data, 0o644)
	}
	leafOnly := file("leaf.pem", ca.EncodeCertificatesPEM(leaf))
	withChain := file("full.pem", ca.EncodeCertificatesPEM(leaf, c.Issuing))
	chain := file("leaf.chain.pem", ca.EncodeCertificatesPEM(c.Issuing))
	empty := file("empty.pem", []byte("\n"))
	garbage := file("garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	for _, tt := range []struct {
		name, cert, chain string
		wantChain         int
		wantErr           bool
	}{
		{"leaf only, no chain file", leafOnly, "", 0, false},
		{"leaf and chain file", leafOnly, chain, 1, false},
		{"missing chain file is no intermediates", leafOnly, filepath.Join(dir, "none.pem"), 0, false},
		{"empty chain file", leafOnly, empty, 0, false},
		{"intermediates in the certificate file", withChain, "", 1, false},
		{"both", withChain, chain, 2, false},
		{"missing certificate", filepath.Join(dir, "none.pem"), "", 0, true},
		{"empty certificate file", empty, "", 0, true},
		{"garbage certificate", garbage, "", 0, true},
		{"garbage chain", leafOnly, garbage, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ch, err := LoadCertificate(tt.cert, tt.chain)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !got.Equal(leaf) || len(ch) != tt.wantChain {
				t.Errorf("leaf equal %v, %d intermediates; want true, %d", got.Equal(leaf), len(ch), tt.wantChain)
			}
		})
	}
	t.Run("LoadBundle", func(t *testing.T) {
		b, err := LoadBundle(file("bundle.pem", c.BundlePEM()))
		if err != nil || len(b) != 2 {
			t.Fatalf("LoadBundle: %d certificates, %v; want 2", len(b), err)
		}
		if _, err := LoadBundle(garbage); err == nil {
			t.Error("LoadBundle accepted garbage")
		}
	})
}
