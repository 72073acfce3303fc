package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/ca/catest"
)

// Helpers of the package's internal tests: a software CA and agent files.

// testCA is catest's software CA.
type testCA = catest.CA

func newTestCA(t *testing.T, trustDomain string) *testCA { return catest.New(t, trustDomain) }

func writeTestFile(t *testing.T, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// tempFiles lists leftovers of writeAtomic in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") || strings.HasSuffix(e.Name(), StagedSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// agentFiles sets up a registered agent on disk: key, certificate, chain.
type agentFiles struct {
	dir, key, cert, chain string
}

func newAgentFiles(t *testing.T, c *testCA, name string, k crypto.Signer) agentFiles {
	t.Helper()
	dir := t.TempDir()
	f := agentFiles{dir: dir, key: filepath.Join(dir, "agent.key"), cert: filepath.Join(dir, "agent.pem")}
	f.chain = ChainPath(f.cert, "")
	data, err := MarshalKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, f.key, data, 0o600)
	writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.Issue(t, k, name)), 0o644)
	writeTestFile(t, f.chain, ca.EncodeCertificatesPEM(c.Issuing), 0o644)
	return f
}

// checkPair asserts that the key and certificate on disk match.
func (f agentFiles) checkPair(t *testing.T) *x509.Certificate {
	t.Helper()
	k, err := LoadKey(f.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, chain, err := LoadCertificate(f.cert, f.chain)
	if err != nil {
		t.Fatal(err)
	}
	if !KeyMatches(k, leaf) {
		t.Fatal("the certificate on disk does not certify the key on disk")
	}
	if len(chain) == 0 || leaf.CheckSignatureFrom(chain[0]) != nil {
		t.Fatal("the chain on disk does not sign the certificate")
	}
	return leaf
}

// fakeRotator issues through a testCA and records what it was shown.
type fakeRotator struct {
	c      *testCA
	mu     sync.Mutex
	seen   []*x509.Certificate // client certificates presented
	fail   error
	calls  int
	status *client.VerifyResult // what Verify answers (default: verified)
}

func (f *fakeRotator) Verify(context.Context, []byte, []byte) (*client.VerifyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status != nil {
		return f.status, nil
	}
	return &client.VerifyResult{Verified: true}, nil
}

func (f *fakeRotator) dial(cert tls.Certificate) (Rotator, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, cert.Leaf)
	return f, nil
}

func (f *fakeRotator) Rotate(_ context.Context, name string, csr []byte) (*client.Certificate, error) {
	f.mu.Lock()
	f.calls++
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	leaf, err := f.c.IssueCSR(csr, name)
	if err != nil {
		return nil, err
	}
	return &client.Certificate{Name: name, Serial: leaf.SerialNumber.Text(16), Certificate: string(ca.EncodeCertificatesPEM(leaf)),
		Chain: string(ca.EncodeCertificatesPEM(f.c.Issuing)), NotAfter: leaf.NotAfter}, nil
}

func newTestRenewer(f agentFiles, fr *fakeRotator) *Renewer {
	return &Renewer{KeyFile: f.key, CertFile: f.cert, ChainFile: f.chain, Dial: fr.dial, Now: time.Now}
}
