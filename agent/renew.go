package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// Renewal schedule: at RenewFraction of the lifetime, ±RenewJitter of the
// lifetime; failed renewals are retried after RetryInitial, doubling up to
// the maximum backoff (DefaultMaxBackoff unless configured).
const (
	RenewFraction     = 2.0 / 3.0
	RenewJitter       = 0.10
	RetryInitial      = 2 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
)

// RenewalDelay is how long to wait at now before renewing a certificate valid
// from notBefore to notAfter, never negative; j in [0, 1) picks the jitter.
// With renewBefore 0 the renewal point is RenewFraction (2/3) of the
// lifetime, moved by up to ±RenewJitter (10%) of the lifetime: the latest
// point, 2/3+1/10, is always before expiry. With renewBefore > 0 the point is
// notAfter-renewBefore, moved by up to ±10% of the time from notBefore to it,
// and never later than notAfter.
func RenewalDelay(notBefore, notAfter, now time.Time, j float64, renewBefore time.Duration) time.Duration {
	life := notAfter.Sub(notBefore)
	var at time.Time
	if renewBefore > 0 {
		point := notAfter.Add(-renewBefore)
		span := max(point.Sub(notBefore), 0)
		at = point.Add(time.Duration(math.Round(float64(span) * RenewJitter * (2*j - 1))))
		if at.After(notAfter) {
			at = notAfter
		}
	} else {
		at = notBefore.Add(time.Duration(math.Round(float64(life) * (RenewFraction + RenewJitter*(2*j-1)))))
	}
	return max(at.Sub(now), 0)
}

// Retryable reports whether a failed renewal may succeed later: transport
// and local errors, and server answers 408, 409, 429 and 5xx; not refusals
// such as a revoked agent (other 4xx), nor an unknown key type.
func Retryable(err error) bool {
	if errors.Is(err, ErrUnknownKeyType) {
		return false
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		return true
	}
	switch {
	case ce.Status == http.StatusRequestTimeout, ce.Status == http.StatusConflict, ce.Status == http.StatusTooManyRequests:
		return true
	case ce.Status >= 500:
		return true
	}
	return false
}

// ServerError is an error the registry answered, explained for a person: its
// message names what was being done, the stable error code, the HTTP status
// and the request ID to quote to an operator (or, for a refused renewal, why
// the certificate was refused). errors.As reaches the *client.Error.
type ServerError struct {
	// CertStatus is, for a renewal refused as unauthenticated, the reason the
	// public verify endpoint gave for the certificate ("revoked",
	// "superseded", "issuer_revoked", "unknown_certificate",
	// "untrusted_chain"), else "".
	CertStatus string
	Err        *client.Error
	msg        string
}

func (e *ServerError) Error() string { return e.msg }
func (e *ServerError) Unwrap() error { return e.Err }

// Explain renders err, the failure of what ("registering bot.acme"), for a
// person: a *client.Error becomes a *ServerError showing its code, HTTP
// status and request ID; any other error is wrapped as "what: err".
func Explain(what string, err error) error {
	var ce *client.Error
	if errors.As(err, &ce) {
		msg := fmt.Sprintf("%s: the server refused: %s (HTTP %d): %s", what, ce.Code, ce.Status, ce.Message)
		if ce.RequestID != "" {
			msg += " [request ID " + ce.RequestID + "]"
		}
		return &ServerError{msg: msg, Err: ce}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Rotator is what renewal needs of the registry API (*client.Client has
// it): the rotation, and the public status check that explains a refusal.
type Rotator interface {
	Rotate(ctx context.Context, name string, csrPEM []byte) (*client.Certificate, error)
	Verify(ctx context.Context, certPEM, chainPEM []byte) (*client.VerifyResult, error)
}

// Dialer returns a Rotator that authenticates with cert (mutual TLS, no API
// key). It is called once per renewal, with the certificate being renewed.
type Dialer func(cert tls.Certificate) (Rotator, error)

// ClientDialer dials the registry at server with the api/client package:
// opts (typically client.WithRootCAs) plus the certificate being renewed.
func ClientDialer(server string, opts ...client.Option) Dialer {
	return func(cert tls.Certificate) (Rotator, error) {
		return client.New(server, append(append([]client.Option(nil), opts...), client.WithClientCertificate(cert))...)
	}
}

// Identity is an agent's key with its certificate and intermediates.
type Identity struct {
	Key   crypto.Signer
	Leaf  *x509.Certificate
	Chain []*x509.Certificate // intermediates, issuer of Leaf first
}

// TLSCertificate returns the identity as a tls.Certificate (leaf first, then
// the intermediates, Leaf set).
func (id *Identity) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{PrivateKey: id.Key, Leaf: id.Leaf, Certificate: [][]byte{id.Leaf.Raw}}
	for _, c := range id.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// Name returns the agent name in the certificate (AgentName).
func (id *Identity) Name() (string, error) {
	n, _, err := ca.AgentIdentity(id.Leaf)
	return n, err
}

// check reports whether id is usable for mTLS renewal as agent want ("" any)
// at now: the certificate certifies the key, names an agent, and has not
// expired. It returns the agent name.
func (id *Identity) check(want string, now time.Time) (string, error) {
	if id.Key == nil || id.Leaf == nil {
		return "", errors.New("the identity lacks its key or certificate")
	}
	if !KeyMatches(id.Key, id.Leaf) {
		return "", errors.New("the certificate does not certify the key")
	}
	name, err := id.Name()
	if err != nil {
		return "", err
	}
	if want != "" && want != name {
		return "", fmt.Errorf("the certificate is that of agent %q, not %q", name, want)
	}
	if !now.Before(id.Leaf.NotAfter) {
		return "", fmt.Errorf("the certificate expired at %s; renewal over mTLS is impossible: register again with an API key", id.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return name, nil
}

// newKeyType is the type of a renewal's new key: typ, or the current key's
// type (P-256 for RSA and unknown keys).
func newKeyType(typ string, cur crypto.Signer) string {
	if typ != "" {
		return typ
	}
	typ = KeyType(cur)
	if typ == KeyRSA || typ == "unknown" {
		typ = KeyP256
	}
	return typ
}

// Register registers agent req.Name with the registry through c (an owner's
// API key: client.WithAPIKey) for key, which never leaves this process: a
// CSR over it is built here and sent as req.CSR. The answer is checked with
// CheckIssued.
func Register(ctx context.Context, c *client.Client, key crypto.Signer, req client.RegisterRequest) (*Issued, error) {
	name, err := ca.NormalizeAgentName(req.Name)
	if err != nil {
		return nil, fmt.Errorf("agent: register: %w", err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		return nil, err
	}
	req.Name, req.CSR = name, string(csr)
	answer, err := c.Register(ctx, req)
	if err != nil {
		return nil, Explain("registering "+name, err)
	}
	return CheckIssued(key, answer, name)
}

// rotate asks the registry, authenticating as cur over mTLS, for a
// certificate for newKey, and checks the answer with CheckIssued.
func rotate(ctx context.Context, dial Dialer, name string, cur *Identity, newKey crypto.Signer) (*Issued, error) {
	csr, err := NewCSR(newKey)
	if err != nil {
		return nil, err
	}
	c, err := dial(cur.TLSCertificate())
	if err != nil {
		return nil, err
	}
	answer, err := c.Rotate(ctx, name, csr)
	if err != nil {
		return nil, explainRenewal(ctx, c, name, cur.Leaf, cur.Chain, err)
	}
	return CheckIssued(newKey, answer, name)
}

// explainRenewal renders a refused renewal. The server answers any
// certificate it will not accept for mTLS with the same 401, so on a 401 the
// certificate's status is asked through the public verify endpoint (which
// tells anyone who holds the certificate): a revoked or superseded
// certificate is named as such rather than "unauthenticated".
func explainRenewal(ctx context.Context, c Rotator, name string, leaf *x509.Certificate, chain []*x509.Certificate, err error) error {
	what := "renewing " + name
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		return Explain(what, err)
	}
	res, verr := c.Verify(ctx, ca.EncodeCertificatesPEM(leaf), ca.EncodeCertificatesPEM(chain...))
	if verr != nil || res.Verified {
		return Explain(what, err)
	}
	serial := ca.FormatSerial(leaf.SerialNumber)
	var msg string
	switch res.Reason {
	case "revoked":
		msg = fmt.Sprintf("%s: the server refused: the certificate (serial %s) is revoked; a revoked certificate cannot be renewed: register the agent again with an API key", what, serial)
	case "superseded":
		msg = fmt.Sprintf("%s: the server refused: the certificate (serial %s) was superseded by a newer one; renew with the agent's current certificate", what, serial)
	case "issuer_revoked":
		msg = fmt.Sprintf("%s: the server refused: the intermediate CA that issued the certificate (serial %s) was revoked by its root; register the agent again with an API key", what, serial)
	case "unknown_certificate", "untrusted_chain":
		msg = fmt.Sprintf("%s: the server refused: it does not know the certificate (serial %s): check the server URL and CA bundle", what, serial)
	default:
		return Explain(what, err)
	}
	if ce.RequestID != "" {
		msg += " [request ID " + ce.RequestID + "]"
	}
	return &ServerError{msg: msg, Err: ce, CertStatus: res.Reason}
}

// schedule runs renewals at RenewalDelay with retries (Renewer.Watch and
// Source share it).
type schedule struct {
	now         func() time.Time
	sleep       func(context.Context, time.Duration) error
	jitter      func() float64
	renewBefore time.Duration
	maxBackoff  time.Duration
	log         *slog.Logger
}

// run renews forever: current returns the certificate in use, renew
// replaces it. It returns nil when ctx is done, or an error when a renewal is
// refused for good or the certificate expired before it could be renewed.
func (s schedule) run(ctx context.Context, current func() (*x509.Certificate, error), renew func(context.Context) error) error {
	for {
		leaf, err := current()
		if err != nil {
			return err
		}
		d := RenewalDelay(leaf.NotBefore, leaf.NotAfter, s.now(), s.jitter(), s.renewBefore)
		s.log.Info("next renewal scheduled", "serial", ca.FormatSerial(leaf.SerialNumber),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "renew_in", d.Round(time.Second).String())
		if err := s.sleep(ctx, d); err != nil {
			return nil // cancelled
		}
		backoff := RetryInitial
		for {
			err := renew(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil
			}
			if !Retryable(err) {
				return err
			}
			if !s.now().Before(leaf.NotAfter) {
				return fmt.Errorf("the certificate expired before it could be renewed (last error: %w)", err)
			}
			wait := backoff
			var ce *client.Error
			if errors.As(err, &ce) && ce.RetryAfter > wait {
				wait = ce.RetryAfter
			}
			wait = min(wait, s.maxBackoff, max(leaf.NotAfter.Sub(s.now())/2, time.Second))
			s.log.Warn("renewal failed; retrying", "error", err.Error(), "retry_in", wait.String())
			if err := s.sleep(ctx, wait); err != nil {
				return nil
			}
			backoff = min(2*backoff, s.maxBackoff)
		}
	}
}

// sleepCtx waits d or until ctx is done (then it returns ctx.Err()).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// discard is the logger of a Renewer or Source given none.
var discard = slog.New(slog.DiscardHandler)

// Renewer renews one agent's certificate in place, in files: the key file,
// the certificate file (leaf only) and the chain file. Every renewal uses a
// new key, and the files are replaced in an order that never leaves a
// certificate on disk whose key is lost (see RenewOnce). Fill in the fields
// and call RenewOnce, or Watch to renew forever; a Renewer must not be
// copied or used by two goroutines at once, and two Renewers must not share
// files.
type Renewer struct {
	KeyFile, CertFile string
	// ChainFile holds the intermediates; "" means ChainPath(CertFile, "").
	ChainFile string
	// Name is the agent; "" means the one the certificate names. A
	// certificate naming another agent is refused before any request.
	Name string
	// KeyType is the type of the new keys (GenerateKey); "" means the
	// current key's type (P-256 when that is RSA).
	KeyType string
	// Dial connects to the registry presenting the current certificate
	// (ClientDialer). Required.
	Dial Dialer
	// Hooks run after each renewal, once key and certificate files match
	// (reload a server here); their errors are logged, not returned.
	Hooks []func(ctx context.Context, leaf *x509.Certificate) error
	// Logger receives progress and warnings (fields agent, serial,
	// not_after, log_index, renew_in, retry_in, error); nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RenewBefore, when positive, makes Watch renew that long before expiry
	// instead of at 2/3 of the lifetime.
	RenewBefore time.Duration
	// MaxBackoff caps Watch's retry backoff; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Sleep waits between Watch's renewals and retries (tests replace it);
	// nil means a timer that ctx interrupts. It returns an error when ctx is
	// done.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (r *Renewer) chainFile() string { return ChainPath(r.CertFile, r.ChainFile) }
func (r *Renewer) stagedKey() string { return r.KeyFile + StagedSuffix }

func (r *Renewer) log() *slog.Logger {
	if r.Logger == nil {
		return discard
	}
	return r.Logger
}

func (r *Renewer) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Recover finishes or discards a renewal a crash interrupted. A staged key
// (KEY.next) that the certificate on disk certifies means the crash came
// after the certificate was written: the key is moved into place. Any other
// staged key belongs to a renewal that never wrote its certificate and is
// removed (the key and certificate on disk still match). RenewOnce and Watch
// call it first.
func (r *Renewer) Recover() error {
	staged := r.stagedKey()
	data, err := ReadSecretFile(staged, MaxKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("staged key: %w", err)
	}
	k, kerr := ParseKey(data)
	leaf, _, cerr := LoadCertificate(r.CertFile, "")
	if kerr == nil && cerr == nil && KeyMatches(k, leaf) {
		r.log().Warn("finishing an interrupted renewal: moving the staged key into place", "key", r.KeyFile)
		return Rename(staged, r.KeyFile)
	}
	r.log().Warn("removing the staged key of an interrupted renewal that never wrote its certificate", "staged", staged)
	if err := removeDurable(staged); err != nil {
		return fmt.Errorf("removing the staged key: %w", err)
	}
	return nil
}

// Load returns the identity in the files, after Recover.
func (r *Renewer) Load() (*Identity, error) {
	if err := r.Recover(); err != nil {
		return nil, err
	}
	key, err := LoadKey(r.KeyFile)
	if err != nil {
		return nil, err
	}
	leaf, chain, err := LoadCertificate(r.CertFile, r.chainFile())
	if err != nil {
		return nil, err
	}
	return &Identity{Key: key, Leaf: leaf, Chain: chain}, nil
}

// RenewOnce rotates the certificate over mTLS with a new key and returns the
// new certificate. The order guarantees that a crash never leaves a
// certificate on disk whose key is lost, and that KEY and CERT match before
// and after:
//
//  1. finish or discard a previous interrupted renewal (Recover);
//  2. load KEY, CERT and CHAIN, which match; they authenticate the request;
//  3. generate the new key and write it to KEY.next (0600, atomic, fsync);
//  4. build the CSR and rotate (POST /v1/agents/{name}/rotate over mTLS);
//     on failure KEY.next is removed and nothing else changed;
//  5. check the new certificate certifies the new key and names the agent;
//  6. write CHAIN, then CERT (each with WriteFile: temporary file, fsync,
//     rename), and the log receipt beside CERT (ReceiptPath);
//  7. rename KEY.next over KEY and fsync the directory;
//  8. run the Hooks.
//
// Between 6 and 7 (one rename) CERT is new and KEY old; a crash there is
// repaired by step 1 of the next run, which finds that KEY.next matches CERT.
// Programs that read the files should reload on a hook, which runs only once
// both are in place.
func (r *Renewer) RenewOnce(ctx context.Context) (*x509.Certificate, error) {
	id, err := r.renew(ctx)
	if err != nil {
		return nil, err
	}
	return id.Leaf, nil
}

// renew is RenewOnce returning the whole new identity.
func (r *Renewer) renew(ctx context.Context) (*Identity, error) {
	cur, err := r.Load()
	if err != nil {
		return nil, err
	}
	name, err := cur.check(r.Name, r.now())
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", r.CertFile, r.KeyFile, err)
	}
	newKey, err := GenerateKey(newKeyType(r.KeyType, cur.Key))
	if err != nil {
		return nil, err
	}
	keyPEM, err := MarshalKey(newKey)
	if err != nil {
		return nil, err
	}
	staged := r.stagedKey()
	if err := WriteFile(staged, keyPEM, KeyFileMode, true); err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			os.Remove(staged)
		}
	}()
	if r.Dial == nil {
		return nil, errors.New("agent: Renewer.Dial is nil")
	}
	iss, err := rotate(ctx, r.Dial, name, cur, newKey)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(r.chainFile(), iss.ChainPEM, CertFileMode, true); err != nil {
		return nil, err
	}
	if err := WriteFile(r.CertFile, iss.LeafPEM, CertFileMode, true); err != nil {
		return nil, err
	}
	committed = true // from here on Recover completes the renewal
	if err := WriteReceipt(r.CertFile, iss.Receipt); err != nil {
		r.log().Warn("could not keep the log receipt beside the certificate", "error", err.Error())
	}
	if err := Rename(staged, r.KeyFile); err != nil {
		return nil, err
	}
	r.log().Info("certificate renewed", "agent", name, "serial", ca.FormatSerial(iss.Leaf.SerialNumber),
		"not_after", iss.Leaf.NotAfter.UTC().Format(time.RFC3339), "log_index", iss.Answer.LogIndex)
	for _, h := range r.Hooks {
		if err := h(ctx, iss.Leaf); err != nil {
			r.log().Warn("reload hook failed", "error", err.Error())
		}
	}
	return &Identity{Key: newKey, Leaf: iss.Leaf, Chain: iss.Chain}, nil
}

// Watch renews forever: at about 2/3 of each certificate's lifetime (or
// RenewBefore its expiry), with jitter, retrying failures with exponential
// backoff (capped at MaxBackoff and raised to the Retry-After the server
// sends) until ctx is done (nil), a renewal is refused for good, or the
// certificate expires before it could be renewed (an error).
func (r *Renewer) Watch(ctx context.Context) error {
	if err := r.Recover(); err != nil {
		return err
	}
	return r.schedule().run(ctx,
		func() (*x509.Certificate, error) {
			leaf, _, err := LoadCertificate(r.CertFile, "")
			return leaf, err
		},
		func(ctx context.Context) error { _, err := r.renew(ctx); return err })
}

func (r *Renewer) schedule() schedule {
	s := schedule{now: r.now, sleep: r.Sleep, jitter: mrand.Float64, renewBefore: r.RenewBefore, maxBackoff: r.MaxBackoff, log: r.log()}
	if s.sleep == nil {
		s.sleep = sleepCtx
	}
	if s.maxBackoff <= 0 {
		s.maxBackoff = DefaultMaxBackoff
	}
	return s
}
