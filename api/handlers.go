package api

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
)

//go:embed openapi.json
var openAPISpec []byte

// OpenAPISpec returns the embedded OpenAPI 3.1 description served at /openapi.json.
func OpenAPISpec() []byte { return append([]byte(nil), openAPISpec...) }

func actorOf(r *http.Request) registry.Actor {
	if a := infoFrom(r.Context()).actor; a != nil {
		return *a
	}
	return registry.Actor{}
}

func pathName(r *http.Request) (string, error) {
	name := mux.Vars(r)["name"]
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) error {
	var req registerRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	iss, err := s.deps.Lifecycle.Register(r.Context(), actorOf(r), req.toRegistry())
	s.metrics.issuance.WithLabelValues("register", outcome(err)).Inc()
	if err != nil {
		return fmt.Errorf("api: register: %w", err)
	}
	writeCertificate(w, http.StatusCreated, iss)
	return nil
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) error {
	cursor, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	agents, next, err := s.deps.Lifecycle.ListAgents(r.Context(), actorOf(r), cursor, limit)
	if err != nil {
		return fmt.Errorf("api: list agents: %w", err)
	}
	out := client.AgentList{Agents: make([]client.Agent, 0, len(agents)), NextCursor: next}
	for i := range agents {
		out.Agents = append(out.Agents, agentBody(&agents[i]))
	}
	writeJSONStatus(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	d, err := s.deps.Lifecycle.GetAgent(r.Context(), actorOf(r), name)
	if err != nil {
		return fmt.Errorf("api: get agent: %w", err)
	}
	out := client.AgentDetail{Agent: agentBody(&d.Agent), Certificates: make([]client.CertificateRecord, 0, len(d.Certificates))}
	for i := range d.Certificates {
		out.Certificates = append(out.Certificates, recordBody(&d.Certificates[i]))
	}
	writeJSONStatus(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleCertificate(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	p, err := s.deps.Lifecycle.CurrentCertificate(r.Context(), actorOf(r), name)
	if err != nil {
		return fmt.Errorf("api: current certificate: %w", err)
	}
	writeBytes(w, "application/pem-certificate-chain", []byte(p))
	return nil
}

func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var req rotateRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	iss, err := s.deps.Lifecycle.Rotate(r.Context(), actorOf(r), name, []byte(req.CSR))
	s.metrics.issuance.WithLabelValues("rotate", outcome(err)).Inc()
	if err != nil {
		return fmt.Errorf("api: rotate: %w", err)
	}
	writeCertificate(w, http.StatusOK, iss)
	return nil
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	name, err := pathName(r)
	if err != nil {
		return err
	}
	var req revokeRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	a, err := s.deps.Lifecycle.Revoke(r.Context(), actorOf(r), name, req.Reason)
	s.metrics.revocations.WithLabelValues(outcome(err)).Inc()
	if err != nil {
		return fmt.Errorf("api: revoke: %w", err)
	}
	writeJSONStatus(w, http.StatusOK, agentBody(a))
	return nil
}

func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) error {
	var req verifyRequest
	if err := readJSON(r, &req); err != nil {
		s.metrics.verify.WithLabelValues("error").Inc()
		return err
	}
	if err := req.Validate(); err != nil {
		s.metrics.verify.WithLabelValues("error").Inc()
		return err
	}
	var chain []byte
	if req.Chain != "" {
		chain = []byte(req.Chain)
	}
	verify := s.deps.Lifecycle.Verify
	if rv, ok := s.deps.Lifecycle.(ReceiptVerifier); ok && (req.Receipt == nil || *req.Receipt) {
		verify = rv.VerifyWithReceipt
	}
	res, err := verify(r.Context(), []byte(req.Certificate), chain)
	if err != nil {
		s.metrics.verify.WithLabelValues("error").Inc()
		return fmt.Errorf("api: verify: %w", err)
	}
	out := client.VerifyResult{
		Verified: res.Verified, Agent: res.Agent, Status: res.Status, Serial: res.Serial,
		FingerprintSHA256: res.FingerprintSHA256, Reason: res.Reason, LogIndex: res.LogIndex, Receipt: res.Receipt,
	}
	if !res.NotAfter.IsZero() {
		t := res.NotAfter.UTC()
		out.NotAfter = &t
	}
	result := "verified"
	if !res.Verified {
		result = res.Reason
		if result == "" {
			result = "unknown"
		}
	}
	s.metrics.verify.WithLabelValues(result).Inc()
	writeVerifyResult(w, out)
	return nil
}

func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) error {
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeBytes(w, "application/pem-certificate-chain", s.deps.Lifecycle.Bundle())
	return nil
}

// jwk is one authority of a SPIFFE trust bundle (SPIFFE Trust Domain and Bundle,
// section 4): an X.509 authority (use "x509-svid", exactly one certificate in x5c) or
// a JWT authority (use "jwt-svid", with kid, no x5c).
type jwk struct {
	Use string   `json:"use"`
	Kty string   `json:"kty"`
	Kid string   `json:"kid,omitempty"`
	Crv string   `json:"crv,omitempty"`
	X   string   `json:"x,omitempty"`
	Y   string   `json:"y,omitempty"`
	N   string   `json:"n,omitempty"`
	E   string   `json:"e,omitempty"`
	X5c []string `json:"x5c,omitempty"`
}

type spiffeBundle struct {
	Keys        []jwk `json:"keys"`
	RefreshHint int64 `json:"spiffe_refresh_hint"`
	Sequence    int64 `json:"spiffe_sequence,omitempty"`
}

func (s *Server) handleSPIFFEBundle(w http.ResponseWriter, r *http.Request) error {
	b, err := spiffeBundleOf(s.deps.Lifecycle.Bundle(), s.cfg.SPIFFERefreshHint)
	if err != nil {
		return err
	}
	jwtKeys, err := s.jwtAuthorities() // handlers_jwt.go
	if err != nil {
		return err
	}
	for _, k := range jwtKeys {
		b.Keys = append(b.Keys, jwk{Use: k.Use, Kty: k.Kty, Kid: k.Kid, Crv: k.Crv, X: k.X, Y: k.Y})
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeJSONStatus(w, http.StatusOK, b)
	return nil
}

// spiffeBundleOf converts the PEM CA bundle into a SPIFFE JWKS: every certificate of the
// bundle (roots and issuing CAs) becomes one x509-svid authority.
func spiffeBundleOf(bundlePEM []byte, hint time.Duration) (*spiffeBundle, error) {
	out := &spiffeBundle{Keys: []jwk{}, RefreshHint: int64(hint / time.Second)}
	b64 := base64.RawURLEncoding.EncodeToString
	rest := bundlePEM
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := parseCert(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("api: spiffe bundle: %w", err)
		}
		k := jwk{Use: "x509-svid", X5c: []string{base64.StdEncoding.EncodeToString(c.Raw)}}
		switch pub := c.PublicKey.(type) {
		case *ecdsa.PublicKey:
			size := (pub.Curve.Params().BitSize + 7) / 8
			k.Kty, k.Crv = "EC", pub.Curve.Params().Name
			ecdh, err := pub.ECDH()
			if err != nil {
				return nil, fmt.Errorf("api: spiffe bundle: %w", err)
			}
			raw := ecdh.Bytes() // 0x04 || X || Y
			k.X, k.Y = b64(raw[1:1+size]), b64(raw[1+size:])
		case *rsa.PublicKey:
			k.Kty = "RSA"
			k.N, k.E = b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
		case ed25519.PublicKey:
			k.Kty, k.Crv, k.X = "OKP", "Ed25519", b64(pub)
		default:
			return nil, fmt.Errorf("api: spiffe bundle: unsupported CA key type %T", pub)
		}
		out.Keys = append(out.Keys, k)
	}
	return out, nil
}

func (s *Server) handleCRL(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Revocation == nil {
		return errNotImplemented
	}
	der, nextUpdate, err := s.deps.Revocation.CRL(r.Context())
	if err != nil {
		return fmt.Errorf("api: crl: %w", err)
	}
	return s.writeCRL(w, r, der, nextUpdate)
}

// handleCRLOf serves GET /v1/crl/{key id}: the CRL of one CA, named by its
// subject key identifier in lowercase hex, the URL in the CRL distribution
// point of the certificates it issued (leaves: their intermediate's CRL;
// intermediates: their root's ceremony-signed CRL).
func (s *Server) handleCRLOf(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Revocation == nil {
		return errNotImplemented
	}
	keyID := mux.Vars(r)["keyid"]
	if len(keyID) < 2 || len(keyID) > 128 || len(keyID)%2 != 0 || strings.Trim(keyID, "0123456789abcdef") != "" {
		return &apiError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no CRL: the path names a CA by its subject key identifier in lowercase hex"}
	}
	der, nextUpdate, err := s.deps.Revocation.CRLOf(r.Context(), keyID)
	if err != nil {
		return fmt.Errorf("api: crl: %w", err)
	}
	return s.writeCRL(w, r, der, nextUpdate)
}

func (s *Server) writeCRL(w http.ResponseWriter, r *http.Request, der []byte, nextUpdate time.Time) error {
	// A revocation must reach relying parties within a second, so caches may
	// keep the CRL for one second only; the ETag makes revalidation cheap.
	sum := sha256.Sum256(der)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	w.Header().Set("ETag", etag)
	s.cacheable(w, crlMaxAge)
	if !nextUpdate.IsZero() {
		w.Header().Set("Expires", nextUpdate.UTC().Format(http.TimeFormat))
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeBytes(w, "application/pkix-crl", der)
	return nil
}

// crlMaxAge is how long shared caches may serve a CRL without revalidating.
const crlMaxAge = time.Second

func (s *Server) handleOCSPPost(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Revocation == nil {
		return errNotImplemented
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/ocsp-request" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType, Message: "Content-Type must be application/ocsp-request"}
	}
	body, err := readAll(r)
	if err != nil {
		return err
	}
	return s.ocsp(w, r, body, false)
}

func (s *Server) handleOCSPGet(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Revocation == nil {
		return errNotImplemented
	}
	der, err := registry.DecodeOCSPGet(mux.Vars(r)["req"])
	if err != nil {
		return s.ocspMalformed(w)
	}
	return s.ocsp(w, r, der, true)
}

// ocsp answers req. With cache (GET only: RFC 5019 §5 makes POST answers
// uncacheable) a successful response carries caching headers until its nextUpdate,
// and a matching If-None-Match gets 304.
func (s *Server) ocsp(w http.ResponseWriter, r *http.Request, req []byte, cache bool) error {
	resp, err := s.deps.Revocation.OCSP(r.Context(), req)
	if errors.Is(err, registry.ErrInvalid) || errors.Is(err, registry.ErrNotFound) {
		infoFrom(r.Context()).logger(s.log).WithError(err).Info("ocsp request refused")
		return s.ocspMalformed(w)
	}
	if err != nil {
		return fmt.Errorf("api: ocsp: %w", err)
	}
	if cache && s.ocspCaching(w, r, resp) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	writeBytes(w, "application/ocsp-response", resp)
	return nil
}

// ocspMalformed answers an undecodable OCSP request the RFC 6960 way: an unsigned
// malformedRequest response, status 200.
func (s *Server) ocspMalformed(w http.ResponseWriter) error {
	writeBytes(w, "application/ocsp-response", ocsp.MalformedRequestErrorResponse)
	return nil
}

func (s *Server) handleCheckpoint(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	note, err := s.deps.Log.Checkpoint(r.Context())
	if err != nil {
		return fmt.Errorf("api: checkpoint: %w", err)
	}
	writeBytes(w, "text/plain; charset=utf-8", note)
	return nil
}

func (s *Server) handleLogKey(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeBytes(w, "application/x-pem-file", s.deps.Log.LogKeyPEM())
	return nil
}

// handleLogVerifierKey serves the log's C2SP signed-note verifier key as one line of text,
// the form note verifiers and witnesses are configured with.
func (s *Server) handleLogVerifierKey(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	vkey := s.deps.Log.LogVerifierKey()
	if vkey == "" {
		return errNotImplemented
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeBytes(w, "text/plain; charset=utf-8", []byte(vkey+"\n"))
	return nil
}

// handleTile serves the log as C2SP tlog-tiles below /v1/log/ (hash tiles and
// entry bundles), so standard tlog tooling can audit it. A tile's content never
// changes once served, so it is cacheable; a partial tile is a different path.
func (s *Server) handleTile(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	b, err := s.deps.Log.Tile(r.Context(), "tile/"+mux.Vars(r)["tile"])
	if err != nil {
		return err
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeBytes(w, "application/octet-stream", b)
	return nil
}

func (s *Server) handleLogEntries(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	start, err := int64Param(r, "start")
	if err != nil {
		return err
	}
	end, err := int64Param(r, "end")
	if err != nil {
		return err
	}
	if end <= start {
		return errInvalid("end must be greater than start")
	}
	end = min(end, start+maxLogEntries)
	entries, err := s.deps.Log.LogEntries(r.Context(), start, end)
	if err != nil {
		return fmt.Errorf("api: log entries: %w", err)
	}
	writeJSONStatus(w, http.StatusOK, client.LogEntries{Start: start, Entries: entries})
	return nil
}

func (s *Server) handleInclusionProof(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	index, err := int64Param(r, "index")
	if err != nil {
		return err
	}
	size, err := int64Param(r, "size")
	if err != nil {
		return err
	}
	if index >= size {
		return errInvalid("index must be less than size")
	}
	p, err := s.deps.Log.InclusionProof(r.Context(), index, size)
	if err != nil {
		return fmt.Errorf("api: inclusion proof: %w", err)
	}
	writeJSONStatus(w, http.StatusOK, client.InclusionProof{Index: index, Size: size, Proof: hashes(p)})
	return nil
}

func (s *Server) handleConsistencyProof(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	oldSize, err := int64Param(r, "old")
	if err != nil {
		return err
	}
	newSize, err := int64Param(r, "new")
	if err != nil {
		return err
	}
	if oldSize < 1 || oldSize > newSize {
		return errInvalid("want 0 < old <= new")
	}
	p, err := s.deps.Log.ConsistencyProof(r.Context(), oldSize, newSize)
	if err != nil {
		return fmt.Errorf("api: consistency proof: %w", err)
	}
	writeJSONStatus(w, http.StatusOK, client.ConsistencyProof{Old: oldSize, New: newSize, Proof: hashes(p)})
	return nil
}

func (s *Server) handleCreateAPIKey(w http.ResponseWriter, r *http.Request) error {
	var req createAPIKeyRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	k, secret, err := s.deps.Admin.CreateAPIKey(r.Context(), actorOf(r), req.Owner, req.Namespace, req.Scopes, req.expiresIn)
	if err != nil {
		return fmt.Errorf("api: create api key: %w", err)
	}
	writeJSONStatus(w, http.StatusCreated, client.CreatedAPIKey{APIKey: apiKeyBody(k), Key: secret})
	return nil
}

func (s *Server) handleRevokeAPIKey(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["id"]
	if id == "" || len(id) > maxIDLen || !printable(id) {
		return errInvalid("id: invalid")
	}
	if err := s.deps.Admin.RevokeAPIKey(r.Context(), actorOf(r), id); err != nil {
		return fmt.Errorf("api: revoke api key: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) error {
	cursor, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	events, next, err := s.deps.Admin.ListAudit(r.Context(), actorOf(r), cursor, limit)
	if err != nil {
		return fmt.Errorf("api: list audit: %w", err)
	}
	out := client.AuditPage{Events: make([]client.AuditEvent, 0, len(events)), NextCursor: next}
	for i := range events {
		out.Events = append(out.Events, auditBody(&events[i]))
	}
	writeJSONStatus(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSONStatus(w, http.StatusOK, client.Status{Status: "ok"})
	return nil
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.deps.Lifecycle.Ready(r.Context()); err != nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "not ready", cause: err}
	}
	writeJSONStatus(w, http.StatusOK, client.Status{Status: "ready"})
	return nil
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeBytes(w, "application/json", openAPISpec)
	return nil
}

var errNotImplemented = &apiError{Status: http.StatusNotImplemented, Code: CodeNotImplemented, Message: "not available on this server"}

// cacheable replaces Cache-Control: no-store for public, immutable-for-a-while data.
func (s *Server) cacheable(w http.ResponseWriter, maxAge time.Duration) {
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(maxAge/time.Second)))
}

func writeBytes(w http.ResponseWriter, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func readAll(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, mbe
		}
		return nil, &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "could not read the request body", cause: err}
	}
	return b, nil
}
