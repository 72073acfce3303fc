// Package client is the Go client of the ATR REST API, used by `atr agent …` and
// `atr verify`, and usable by any Go program.
//
//	c, err := client.New("https://atr.example.org:8443",
//		client.WithRootCAs(pool), client.WithAPIKey(key))
//	cert, err := c.Register(ctx, client.RegisterRequest{Name: "billing-bot.acme", CSR: csrPEM})
//
// An agent renews with its current certificate and no API key:
//
//	c, err := client.New(url, client.WithRootCAs(pool), client.WithClientCertificate(tlsCert))
//	cert, err := c.Rotate(ctx, "billing-bot.acme", newCSRPEM)
//
// A Client that makes its own http.Client speaks HTTP/1.1 over keep-alive
// connections (at most 64, each closed after 50 s unused), which ATR's
// server answers more cheaply than HTTP/2; WithHTTPClient gives it any
// other. Keep one Client for the life of the process: each connection it
// opens costs a TLS handshake, far more than the call it carries.
//
// Every method takes a context first. Errors answered by the server are *Error values
// carrying the HTTP status, the stable error code and the request ID to quote to an
// operator; transport failures are returned wrapped.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agent-trust-registry/atr/registry/apikey"
	jsonv2 "github.com/go-json-experiment/json"
)

// maxResponse caps how much of a response body the client reads.
const maxResponse = 8 << 20

// Error is an error answered by the server.
type Error struct {
	Status     int           // HTTP status
	Code       string        // stable error code ("unauthenticated", "rate_limited", ...)
	Message    string        // generic, human-readable
	RequestID  string        // quote this to the operator
	RetryAfter time.Duration // from Retry-After on 429 and 503, else 0
}

func (e *Error) Error() string {
	return fmt.Sprintf("atr: %d %s: %s (request %s)", e.Status, e.Code, e.Message, e.RequestID)
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Client talks to one ATR server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	hc        *http.Client
	apiKey    string
	userAgent string
}

type options struct {
	hc         *http.Client
	roots      *x509.CertPool
	cert       *tls.Certificate
	apiKey     string
	userAgent  string
	allowHTTP  bool
	timeout    time.Duration
	tlsChanged bool
}

// Option configures a Client.
type Option func(*options) error

// WithHTTPClient uses hc instead of a fresh http.Client. TLS options (WithRootCAs,
// WithClientCertificate) are applied to a clone of its *http.Transport (of
// http.DefaultTransport, which offers HTTP/2, when hc.Transport is nil).
func WithHTTPClient(hc *http.Client) Option {
	return func(o *options) error {
		if hc == nil {
			return errors.New("client: nil http.Client")
		}
		o.hc = hc
		return nil
	}
}

// WithRootCAs trusts pool (for example the ATR CA bundle) for the server's certificate
// instead of the system roots.
func WithRootCAs(pool *x509.CertPool) Option {
	return func(o *options) error { o.roots, o.tlsChanged = pool, true; return nil }
}

// WithClientCertificate presents cert over TLS (mTLS renewal by the agent itself).
func WithClientCertificate(cert tls.Certificate) Option {
	return func(o *options) error { o.cert, o.tlsChanged = &cert, true; return nil }
}

// WithAPIKey sends key as "Authorization: Bearer <key>". Surrounding white space (the
// newline of a key file) is ignored. A key that is not of the form apikey.Parse accepts
// (for example "null" from a failed jq) is refused here, before anything is sent: the
// server would count it as a failed authentication against the caller's address.
func WithAPIKey(key string) Option {
	return func(o *options) error {
		key = strings.TrimSpace(key)
		if _, err := apikey.Parse(key); err != nil {
			return err
		}
		o.apiKey = key
		return nil
	}
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option {
	return func(o *options) error { o.userAgent = ua; return nil }
}

// WithTimeout bounds each request (default 30 s) when the Client builds its own
// http.Client.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error { o.timeout = d; return nil }
}

// WithAllowHTTP allows a plain http:// base URL to a host that is not loopback (behind
// a TLS-terminating proxy on a trusted network). Without it, New refuses such URLs so
// that API keys are not sent in clear text by accident.
func WithAllowHTTP() Option {
	return func(o *options) error { o.allowHTTP = true; return nil }
}

// connsPerHost is how many connections a Client that builds its own
// transport opens to its server, and keeps while idle: http.DefaultTransport
// keeps 2 idle, and over HTTP/1.1 a caller with more requests in flight
// would close the others after each request and pay a TLS handshake for the
// next. Requests beyond it wait for a connection instead of dialing.
const connsPerHost = 64

// idleConnTimeout closes a kept connection after this long unused: under
// the 60 s after which common load balancers drop an idle connection, so
// that a request is not sent on one they are closing (a POST that was
// written is not retried on another).
const idleConnTimeout = 50 * time.Second

// newTransport is the transport of a Client that builds its own
// http.Client: http.DefaultTransport's settings (the proxy from the
// environment, its dial and TLS timeouts), HTTP/1.1 keep-alive only, at
// most connsPerHost connections and idleConnTimeout. HTTP/1.1 because ATR's
// server answers it more cheaply than HTTP/2: in atr-bench's public calls,
// one request at a time on each of 16 kept connections, HTTP/2 cost the
// server 1.4–1.5× the CPU per request (a verify 171–184 µs against
// 116–121; docs/performance.md, "The public calls over HTTP/2"). A caller
// that wants HTTP/2 passes an http.Client of its own (WithHTTPClient).
//
// It is built, not cloned from http.DefaultTransport: Clone sets HTTP/2 up
// on DefaultTransport first and copies its ALPN "h2" into the clone, so a
// clone limited to HTTP/1.1 still offers "h2", the server takes it, and the
// request fails.
func newTransport() *http.Transport {
	var only1 http.Protocols
	only1.SetHTTP1(true)
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   connsPerHost,
		MaxConnsPerHost:       connsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		Protocols:             &only1,
	}
}

// New returns a Client for the server at baseURL ("https://host:port").
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("client: base URL %q: want https://host[:port]", baseURL)
	}
	o := options{userAgent: "atr-client", timeout: 30 * time.Second}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if u.Scheme == "http" && !o.allowHTTP && !IsLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("client: refusing plain http to %s (use https or WithAllowHTTP)", u.Host)
	}
	hc := o.hc
	if hc == nil {
		hc = &http.Client{Timeout: o.timeout, Transport: newTransport()}
	}
	if o.tlsChanged {
		tr, ok := hc.Transport.(*http.Transport)
		if hc.Transport == nil {
			tr, ok = http.DefaultTransport.(*http.Transport), true
		}
		if !ok {
			return nil, errors.New("client: TLS options need an *http.Transport")
		}
		tr = tr.Clone()
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if o.roots != nil {
			tr.TLSClientConfig.RootCAs = o.roots
		}
		if o.cert != nil {
			cert := *o.cert
			tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		}
		c := *hc
		c.Transport = tr
		hc = &c
	}
	return &Client{base: u, hc: hc, apiKey: o.apiKey, userAgent: o.userAgent}, nil
}

// IsLoopbackHost reports whether host (no port, no brackets) names only the
// loopback interface: "localhost" in any case, or a loopback IP address
// (127.0.0.0/8, ::1, or 127.x mapped into IPv6).
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Register registers an agent with a CSR (POST /v1/agents).
func (c *Client) Register(ctx context.Context, req RegisterRequest) (*Certificate, error) {
	var out Certificate
	if err := c.doJSON(ctx, http.MethodPost, "/v1/agents", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Rotate replaces the agent's certificate (POST /v1/agents/{name}/rotate). With
// WithClientCertificate and no API key, the agent authenticates with its current
// certificate.
func (c *Client) Rotate(ctx context.Context, name string, csrPEM []byte) (*Certificate, error) {
	var out Certificate
	if err := c.doJSON(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/rotate", nil, RotateRequest{CSR: string(csrPEM)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke revokes the agent's certificate with an RFC 5280 reason name.
func (c *Client) Revoke(ctx context.Context, name, reason string) (*Agent, error) {
	var out Agent
	if err := c.doJSON(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/revoke", nil, RevokeRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Get returns one agent with its certificate history.
func (c *Client) Get(ctx context.Context, name string) (*AgentDetail, error) {
	var out AgentDetail
	if err := c.doJSON(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// List returns one page of agents; pass the previous page's NextCursor to continue.
// limit ≤ 0 means the server default (50); the server caps it at 100.
func (c *Client) List(ctx context.Context, cursor string, limit int) (*AgentList, error) {
	var out AgentList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/agents", pageQuery(cursor, limit), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CurrentCertificate returns the agent's current certificate as PEM.
func (c *Client) CurrentCertificate(ctx context.Context, name string) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name)+"/certificate", nil)
}

// Verify asks whether certPEM (with optional intermediates chainPEM) is a genuine,
// current, unrevoked ATR agent certificate. A certificate that does not verify is not an
// error: the result has Verified false and a Reason.
// The result carries the certificate's log receipt when the registry has one.
func (c *Client) Verify(ctx context.Context, certPEM, chainPEM []byte) (*VerifyResult, error) {
	return c.verify(ctx, VerifyRequest{Certificate: string(certPEM), Chain: string(chainPEM)})
}

// VerifyWithoutReceipt is Verify for a caller that does not keep log receipts
// (an rp.OnlineChecker): the registry makes none, and its answer is ~200 bytes
// instead of ~4 KB, which costs the server and the caller less
// (docs/performance.md, "Verify without its receipt"). A server older than
// the "receipt" member (2026-12-03) refuses the request.
func (c *Client) VerifyWithoutReceipt(ctx context.Context, certPEM, chainPEM []byte) (*VerifyResult, error) {
	no := false
	return c.verify(ctx, VerifyRequest{Certificate: string(certPEM), Chain: string(chainPEM), Receipt: &no})
}

func (c *Client) verify(ctx context.Context, req VerifyRequest) (*VerifyResult, error) {
	var out VerifyResult
	if err := c.doJSON(ctx, http.MethodPost, "/v1/verify", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Bundle returns the PEM CA bundle (roots and issuing CAs).
func (c *Client) Bundle(ctx context.Context) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/v1/ca/bundle", nil)
}

// SPIFFEBundle returns the SPIFFE trust bundle (JWKS) of the trust domain.
func (c *Client) SPIFFEBundle(ctx context.Context) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/v1/ca/spiffe-bundle", nil)
}

// CRL returns the current DER CRL.
func (c *Client) CRL(ctx context.Context) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/v1/crl", nil)
}

// Checkpoint returns the transparency log's latest signed checkpoint (a C2SP note).
func (c *Client) Checkpoint(ctx context.Context) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/v1/log/checkpoint", nil)
}

// LogEntries returns log leaves [start, end) (the server may return fewer).
func (c *Client) LogEntries(ctx context.Context, start, end int64) (*LogEntries, error) {
	var out LogEntries
	q := url.Values{"start": {strconv.FormatInt(start, 10)}, "end": {strconv.FormatInt(end, 10)}}
	if err := c.doJSON(ctx, http.MethodGet, "/v1/log/entries", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// InclusionProof returns the proof that leaf index is in the tree of the given size.
func (c *Client) InclusionProof(ctx context.Context, index, size int64) (*InclusionProof, error) {
	var out InclusionProof
	q := url.Values{"index": {strconv.FormatInt(index, 10)}, "size": {strconv.FormatInt(size, 10)}}
	if err := c.doJSON(ctx, http.MethodGet, "/v1/log/proof/inclusion", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ConsistencyProof returns the proof that the tree of size oldSize is a prefix of the
// tree of size newSize.
func (c *Client) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (*ConsistencyProof, error) {
	var out ConsistencyProof
	q := url.Values{"old": {strconv.FormatInt(oldSize, 10)}, "new": {strconv.FormatInt(newSize, 10)}}
	if err := c.doJSON(ctx, http.MethodGet, "/v1/log/proof/consistency", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateAPIKey creates an API key (admin). The secret is in the result's Key, once.
func (c *Client) CreateAPIKey(ctx context.Context, req CreateAPIKeyRequest) (*CreatedAPIKey, error) {
	var out CreatedAPIKey
	if err := c.doJSON(ctx, http.MethodPost, "/v1/admin/apikeys", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAPIKeys returns one page of the API keys (admin), ordered by id; pass the previous
// page's NextCursor to continue. limit ≤ 0 means the server default (50); the server caps
// it at 100. Neither secrets nor their hashes are ever returned.
func (c *Client) ListAPIKeys(ctx context.Context, cursor string, limit int) (*APIKeyPage, error) {
	var out APIKeyPage
	if err := c.doJSON(ctx, http.MethodGet, "/v1/admin/apikeys", pageQuery(cursor, limit), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeAPIKey revokes an API key by id (admin).
func (c *Client) RevokeAPIKey(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/admin/apikeys/"+url.PathEscape(id), nil, nil, nil)
}

// Audit returns one page of the audit trail (admin), newest first.
func (c *Client) Audit(ctx context.Context, cursor string, limit int) (*AuditPage, error) {
	var out AuditPage
	if err := c.doJSON(ctx, http.MethodGet, "/v1/admin/audit", pageQuery(cursor, limit), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health returns nil when GET /healthz answers 200.
func (c *Client) Health(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Ready returns nil when GET /readyz answers 200 (database and token usable).
func (c *Client) Ready(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodGet, "/readyz", nil, nil, nil)
}

func pageQuery(cursor string, limit int) url.Values {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return q
}

// doJSON sends in (when non-nil) as JSON and decodes a 2xx body into out (when non-nil).
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	data, err := c.do(ctx, method, path, q, body, "application/json")
	if err != nil {
		return err
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	// encoding/json/v2 reads an answer ~5x faster than encoding/json (a
	// verify's answer with its receipt: 20 → 4 µs, docs/performance.md);
	// unknown fields are ignored, as before.
	if err := jsonv2.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: %s %s: decoding response: %w", method, path, err)
	}
	return nil
}

func (c *Client) doBytes(ctx context.Context, method, path string, q url.Values) ([]byte, error) {
	return c.do(ctx, method, path, q, nil, "")
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string) ([]byte, error) {
	u := *c.base
	raw := strings.TrimRight(c.base.EscapedPath(), "/") + path // path segments are already escaped
	p, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	u.Path, u.RawPath = p, raw
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := readAnswer(resp)
	if errors.Is(err, errTooLarge) {
		return nil, fmt.Errorf("client: %s %s: response larger than %d bytes", method, path, maxResponse)
	}
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: reading response: %w", method, path, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID")}
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
		if eb.Error.RequestID != "" {
			e.RequestID = eb.Error.RequestID
		}
	} else {
		e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), http.StatusText(resp.StatusCode)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, err := strconv.Atoi(ra); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return nil, e
}

var errTooLarge = errors.New("response too large")

// readAnswer reads resp's body to its end, at most maxResponse bytes
// (errTooLarge past that), into one buffer first made at the declared
// length, up to firstAnswerBuffer: io.ReadAll starts at 512 bytes and
// grows, which for a verify's ~3.6 KB answer made six buffers and copied
// ~7 KB (BenchmarkVerify). It reads to the end, not to the declared length:
// an HTTP/2 server may end the stream in a frame after the last bytes (a
// read that stops at the length, then Close, cancels the stream), and a
// RoundTripper may change a body without its length. A server that
// declares more than it sends costs no more than the first buffer.
func readAnswer(resp *http.Response) ([]byte, error) {
	first := min(max(resp.ContentLength, 0), firstAnswerBuffer) + bytes.MinRead
	buf := bytes.NewBuffer(make([]byte, 0, first))
	_, err := buf.ReadFrom(io.LimitReader(resp.Body, maxResponse+1))
	if err == nil && buf.Len() > maxResponse {
		err = errTooLarge
	}
	return buf.Bytes(), err
}

// firstAnswerBuffer is the most readAnswer reserves before the bytes
// arrive.
const firstAnswerBuffer = 64 << 10
