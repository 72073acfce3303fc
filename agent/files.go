package agent

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// File modes and size limits of the files an agent keeps.
const (
	KeyFileMode  os.FileMode = 0o600 // private keys
	CertFileMode os.FileMode = 0o644 // certificates, chains, receipts
	MaxKeyFile               = 64 << 10
	MaxCertFile              = 1 << 20
	// StagedSuffix names the staged key of a renewal in progress: KEY.next
	// (see Renewer.RenewOnce).
	StagedSuffix = ".next"
	// maxBundleCerts bounds the certificates of one PEM file (bundles may be long).
	maxBundleCerts = 100
)

// ChainPath is where the intermediates of the certificate file cert live:
// override when it is not empty, else cert with ".pem" replaced by
// ".chain.pem" (agent.pem → agent.chain.pem), else cert + ".chain.pem"
// (agent.crt → agent.crt.chain.pem).
func ChainPath(cert, override string) string {
	if override != "" {
		return override
	}
	if strings.HasSuffix(cert, ".pem") {
		return strings.TrimSuffix(cert, ".pem") + ".chain.pem"
	}
	return cert + ".chain.pem"
}

// ReceiptPath is where the transparency-log receipt of the certificate in
// cert is kept: cert with ".pem" replaced by ".receipt.json"
// (agent.pem → agent.receipt.json).
func ReceiptPath(cert string) string {
	return strings.TrimSuffix(cert, ".pem") + ".receipt.json"
}

// WriteReceipt keeps the receipt of a fresh certificate beside the
// certificate file cert (ReceiptPath, written with WriteFile); an empty
// receipt removes a stale file.
func WriteReceipt(cert string, receipt []byte) error {
	path := ReceiptPath(cert)
	if len(receipt) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return WriteFile(path, append(append([]byte(nil), receipt...), '\n'), CertFileMode, true)
}

// ReadFile reads at most max bytes of path, refusing larger files.
func ReadFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readCapped(f, path, max)
}

// readCapped reads f (named path) to its end, refusing more than max bytes.
func readCapped(f *os.File, path string, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// ReadSecretFile reads a secret (private key, API key) of at most max bytes,
// refusing anything but a regular file and a file that group or others may
// access, as ssh does. The checks are made on the opened file (no window
// between check and read); the open does not block on a FIFO.
func ReadSecretFile(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: a secret must not be accessible by group or others (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	return readCapped(f, path, max)
}

// WriteFile writes data to path durably and atomically: once it returns nil,
// path holds all of data with exactly mode (whatever the umask) and survives
// a crash; before that, readers see the old content or nothing, never a
// part. A temporary file in the same directory is written, fsynced and
// closed, then renamed over path (replace) or hard-linked to path, which
// fails with an error wrapping fs.ErrExist if path exists, even as a
// dangling symlink (no replace: refusing to overwrite without a
// check-then-create race). The directory is fsynced so the new name
// survives. The temporary file never outlives the call.
func WriteFile(path string, data []byte, mode os.FileMode, replace bool) (err error) {
	if path == "" {
		return errors.New("writing: empty path")
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("writing %s: removing the temporary file: %w", path, rerr)
		}
	}()
	werr := f.Chmod(mode)
	if werr == nil {
		_, werr = f.Write(data)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", path, werr)
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	} else if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return syncDir(dir)
}

// Rename renames oldPath to newPath and fsyncs newPath's directory, so the
// rename survives a crash once it returns.
func Rename(oldPath, newPath string) error {
	if err := os.Rename(oldPath, newPath); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", oldPath, newPath, err)
	}
	return syncDir(filepath.Dir(newPath))
}

// syncDir fsyncs a directory (file systems that cannot are tolerated).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// removeDurable removes path and fsyncs its directory.
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// LoadCertificate reads certFile (PEM: the leaf first, possibly followed by
// intermediates) and, when chainFile is not empty and exists, the
// intermediates in chainFile (an empty chain file is no intermediates). PEM
// is parsed strictly (ca.ParseCertificatesPEM); each file is at most
// MaxCertFile bytes.
func LoadCertificate(certFile, chainFile string) (leaf *x509.Certificate, chain []*x509.Certificate, err error) {
	data, err := ReadFile(certFile, MaxCertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the certificate: %w", err)
	}
	certs, err := ca.ParseCertificatesPEM(data, maxBundleCerts)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	leaf, chain = certs[0], certs[1:]
	if chainFile != "" {
		data, err := ReadFile(chainFile, MaxCertFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, nil, fmt.Errorf("reading the chain: %w", err)
		case len(strings.TrimSpace(string(data))) > 0:
			more, err := ca.ParseCertificatesPEM(data, maxBundleCerts)
			if err != nil {
				return nil, nil, fmt.Errorf("chain %s: %w", chainFile, err)
			}
			chain = append(chain, more...)
		}
	}
	return leaf, chain, nil
}

// Issued is a certificate the registry issued, checked against the key it
// was requested for (CheckIssued).
type Issued struct {
	Key      crypto.Signer // the key the certificate was requested for
	Leaf     *x509.Certificate
	Chain    []*x509.Certificate // intermediates, issuer of Leaf first
	LeafPEM  []byte              // Leaf alone, to write to the certificate file
	ChainPEM []byte              // Chain, to write to the chain file
	Receipt  []byte              // the transparency-log receipt (may be empty)
	Answer   *client.Certificate // the server's answer as received
}

// CheckIssued validates an issuance answer (register or rotate) against the
// key k it was requested for: the certificate certifies k, carries an agent
// SPIFFE ID naming wantName (any agent when wantName is ""), and the first
// intermediate of the chain, when there is one, signs it.
func CheckIssued(k crypto.Signer, c *client.Certificate, wantName string) (*Issued, error) {
	certs, err := ca.ParseCertificatesPEM([]byte(c.Certificate), 1)
	if err != nil {
		return nil, fmt.Errorf("the server's certificate: %w", err)
	}
	leaf := certs[0]
	if !KeyMatches(k, leaf) {
		return nil, errors.New("the server returned a certificate for another key")
	}
	if name, _, err := ca.AgentIdentity(leaf); err != nil {
		return nil, fmt.Errorf("the server's certificate: %w", err)
	} else if wantName != "" && name != wantName {
		return nil, fmt.Errorf("the server's certificate names agent %q, want %q", name, wantName)
	}
	var chain []*x509.Certificate
	if strings.TrimSpace(c.Chain) != "" {
		if chain, err = ca.ParseCertificatesPEM([]byte(c.Chain), maxBundleCerts); err != nil {
			return nil, fmt.Errorf("the server's chain: %w", err)
		}
		if err := leaf.CheckSignatureFrom(chain[0]); err != nil {
			return nil, fmt.Errorf("the server's chain does not sign the certificate: %w", err)
		}
	}
	return &Issued{Key: k, Leaf: leaf, Chain: chain, LeafPEM: ca.EncodeCertificatesPEM(leaf), ChainPEM: ca.EncodeCertificatesPEM(chain...),
		Receipt: c.Receipt, Answer: c}, nil
}

// Identity returns the key, certificate and chain as an Identity (for
// Config.Identity).
func (i *Issued) Identity() *Identity {
	return &Identity{Key: i.Key, Leaf: i.Leaf, Chain: i.Chain}
}

// LoadBundle reads a PEM file of CA certificates (the ATR trust bundle,
// var/ca/bundle.pem or GET /v1/ca/bundle), strictly parsed, for
// Config.Bundle.
func LoadBundle(path string) ([]*x509.Certificate, error) {
	data, err := ReadFile(path, MaxCertFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	certs, err := ca.ParseCertificatesPEM(data, maxBundleCerts)
	if err != nil {
		return nil, fmt.Errorf("CA bundle %s: %w", path, err)
	}
	return certs, nil
}
