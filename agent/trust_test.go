package agent

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca/catest"
)

// TestTrustRootsPinned: the first bundle's roots are pinned; a refreshed
// bundle may bring a new intermediate (an intermediate rotation) but not a
// new root, and the peer verifier stays the previous one when refused.
func TestTrustRootsPinned(t *testing.T) {
	c := catest.New(t, "test.local")
	k, err := GenerateKey(KeyP256)
	if err != nil {
		t.Fatal(err)
	}
	id := &Identity{Key: k, Leaf: c.Issue(t, k, "bot.acme"), Chain: []*x509.Certificate{c.Issuing}}
	s := &Source{td: "test.local", cfg: Config{Now: time.Now}}
	if err := s.setTrust([]*x509.Certificate{c.Issuing, c.Root}, id); err != nil {
		t.Fatal(err)
	}
	first := s.trust.Load()

	// The same roots again are accepted.
	if err := s.setTrust([]*x509.Certificate{c.Issuing, c.Root}, id); err != nil {
		t.Errorf("refreshing with the same bundle: %v", err)
	}
	rotated := catest.New(t, "test.local") // another hierarchy: a foreign root
	// A bundle that adds a root (even one that also verifies the agent) is refused.
	err = s.setTrust([]*x509.Certificate{c.Issuing, c.Root, rotated.Root}, id)
	if err == nil || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("a bundle adding a root: %v, want a refusal naming the pinned roots", err)
	}
	if got := s.trust.Load(); got.pinned[0] != first.pinned[0] || len(got.pinned) != 1 {
		t.Errorf("pinned roots changed after a refused bundle: %v", got.pinned)
	}
	// A peer of the planted root is refused.
	pk, _ := GenerateKey(KeyP256)
	planted := rotated.Issue(t, pk, "server.acme")
	if _, err := s.VerifyPeer([]*x509.Certificate{planted, rotated.Issuing}, x509.ExtKeyUsageServerAuth, AuthorizeAny); err == nil {
		t.Error("a peer under a root the refused bundle carried was accepted")
	}
	// No Authorizer: fail closed, even for a genuine peer.
	peer := c.Issue(t, pk, "server.acme")
	if _, err := s.VerifyPeer([]*x509.Certificate{peer, c.Issuing}, x509.ExtKeyUsageServerAuth, nil); err == nil {
		t.Error("VerifyPeer without an Authorizer accepted a peer")
	}
	if name, err := s.VerifyPeer([]*x509.Certificate{peer, c.Issuing}, x509.ExtKeyUsageServerAuth, AuthorizeAny); err != nil || name != "server.acme" {
		t.Errorf("VerifyPeer with AuthorizeAny = %q, %v", name, err)
	}
}
