package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Server certificate policy: the server's own TLS certificate is issued by
// the intermediate for ServerCertLifetime and replaced once two thirds of its
// life have passed, without a restart.
const (
	ServerCertLifetime = 24 * time.Hour
	// serverCertTimeout bounds one issuance of the server certificate (the
	// token signs, the database commits twice); handshakes wait meanwhile.
	serverCertTimeout = 15 * time.Second
	// serverCertRetry is how long a failed renewal waits before the next try
	// while the current certificate is still valid.
	serverCertRetry = time.Minute
)

// ServerTLS serves the registry's own TLS certificate, issued through the
// issuance pipeline (IssueServerCertificate: record before sign, lint,
// transparency log, audit), and renews it once two thirds of its life have
// passed. The TLS private key is an in-memory ECDSA P-256 key, regenerated on
// every renewal; only its public key goes to the token-backed issuer. Use
// GetCertificate as tls.Config.GetCertificate.
type ServerTLS struct {
	r   *Registry
	dns []string
	ips []net.IP
	log *logrus.Entry

	mu      sync.Mutex
	current *tls.Certificate
	renewAt time.Time
}

// ServerTLS issues the first server certificate for dns and ips (on ctx), so
// that a server fails at start-up rather than on its first handshake.
func (r *Registry) ServerTLS(ctx context.Context, dns []string, ips []net.IP) (*ServerTLS, error) {
	s := &ServerTLS{r: r, dns: dns, ips: ips, log: r.log.WithField("component", "tls")}
	if _, err := s.get(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate returns the current certificate, renewing it first when it
// is due. The renewal is the server's work, not the client's: it runs on the
// handshake's context without its cancellation (bounded by
// serverCertTimeout), so a client that hangs up does not abandon it. A
// failed renewal keeps serving the current certificate until it expires.
func (s *ServerTLS) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ctx := context.Background() // tests call it without a ClientHelloInfo; crypto/tls never does
	if hello != nil {
		ctx = context.WithoutCancel(hello.Context())
	}
	return s.get(ctx)
}

func (s *ServerTLS) get(ctx context.Context) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.r.now()
	if s.current != nil && now.Before(s.renewAt) {
		return s.current, nil
	}
	c, sc, err := s.issue(ctx)
	if err != nil {
		if s.current != nil && now.Before(s.current.Leaf.NotAfter) {
			s.log.WithError(err).Warn("renewing the server certificate failed; serving the current one")
			s.renewAt = now.Add(serverCertRetry) // retry soon, not on every handshake
			return s.current, nil
		}
		return nil, err
	}
	s.current = c
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	s.renewAt = c.Leaf.NotBefore.Add(life * 2 / 3)
	s.log.WithFields(logrus.Fields{"serial": sc.Serial, "fingerprint": sc.FingerprintSHA256, "log_index": sc.LogIndex,
		"not_after": c.Leaf.NotAfter.UTC().Format(time.RFC3339), "dns": s.dns, "ips": fmt.Sprint(s.ips)}).Info("issued the server TLS certificate")
	return c, nil
}

// issue generates a fresh key and issues its certificate.
func (s *ServerTLS) issue(ctx context.Context) (*tls.Certificate, *ServerCertificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: generating the server TLS key: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, serverCertTimeout)
	defer cancel()
	sc, err := s.r.IssueServerCertificate(ctx, key.Public(), s.dns, s.ips, ServerCertLifetime)
	if err != nil {
		return nil, nil, err
	}
	chain := [][]byte{sc.Certificate.Raw}
	for _, c := range sc.Chain {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: sc.Certificate}, sc, nil
}
