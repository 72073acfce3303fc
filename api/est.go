package api

// Enrollment over Secure Transport (RFC 7030, clarified by RFC 8951) under
// /.well-known/est/. EST is another door to the same lifecycle: simpleenroll is
// POST /v1/agents (Registry.Register) and simplereenroll is
// POST /v1/agents/{name}/rotate (Registry.Rotate), with the same authentication,
// scopes, namespaces, rate limits and issuance pipeline (lint, record before
// sign, log). Only the wire format differs: base64 DER in, certs-only PKCS#7
// (base64) out, and text/plain errors (RFC 7030 §4.2.3).
//
// The routes also answer under one label segment (RFC 7030 §3.2.2),
// /.well-known/est/<trust domain>/<operation>: the label names the CA by the
// trust domain it issues for; any other label is a 404.

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/smallstep/pkcs7"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
)

// EST media types (RFC 7030 §4.1.3, §4.2, §4.5; RFC 8951).
const (
	estCertsOnly = "application/pkcs7-mime; smime-type=certs-only"
	estPKCS10    = "application/pkcs10"
	estCSRAttrs  = "application/csrattrs"
	// estRealm is the HTTP Basic realm of the 401 on EST routes (RFC 7030 §3.2.3).
	estRealm = `Basic realm="atr-est"`
	// estBodyLimit caps an EST request body: a CSR of ca.MaxCSRSize bytes in
	// base64 (4/3) with line breaks.
	estBodyLimit = ca.MaxCSRSize*3/2 + 1024
)

// basicAPIKey is the API key presented as the password of HTTP Basic
// authentication (RFC 7030 §3.2.3, RFC 7617). The user name is ignored: the
// key alone names the owner. The key must look like one (the rules of bearer).
func basicAPIKey(r *http.Request) (string, bool) {
	_, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	return bearer("Bearer " + pass)
}

// writeESTError is writeError for EST routes: the same status, logging, metrics
// and rate-limit headers, with the fixed message as text/plain (RFC 7030
// §4.2.3) and an HTTP Basic challenge on a 401 (§3.2.3).
func (s *Server) writeESTError(w http.ResponseWriter, r *http.Request, err error) {
	status, _, msg := s.refused(w, r, err)
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", estRealm)
	}
	body := msg + "\n"
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// estLabel refuses a label segment other than the trust domain.
func (s *Server) estLabel(r *http.Request) error {
	if label, ok := mux.Vars(r)["label"]; ok && label != s.cfg.TrustDomain {
		return &apiError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such CA label: the label is the trust domain"}
	}
	return nil
}

// writeEST writes body base64-encoded, in lines of 64 characters (RFC 8951
// §3.2: base64 per RFC 4648 §4; openssl base64 -d needs the line breaks).
func writeEST(w http.ResponseWriter, contentType string, der []byte) {
	enc := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(enc) > 64 {
		b.WriteString(enc[:64])
		b.WriteString("\n")
		enc = enc[64:]
	}
	b.WriteString(enc)
	b.WriteString("\n")
	h := w.Header()
	h.Set("Content-Transfer-Encoding", "base64")
	writeBytes(w, contentType, []byte(b.String()))
}

// certsOnly is a certs-only CMS SignedData (RFC 5272 Simple PKI Response) of certs.
func certsOnly(certs ...[]byte) ([]byte, error) {
	p7, err := pkcs7.DegenerateCertificate(bytes.Join(certs, nil))
	if err != nil {
		return nil, fmt.Errorf("api: est: building the certs-only response: %w", err)
	}
	return p7, nil
}

// pemCertificates returns the DER of every CERTIFICATE block of p (our own PEM).
func pemCertificates(p []byte) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		if b, p = pem.Decode(p); b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, b.Bytes)
		}
	}
}

// handleESTCACerts serves GET cacerts (RFC 7030 §4.1): the certificates of
// GET /v1/ca/bundle (issuing CAs, then roots) as a certs-only PKCS#7.
func (s *Server) handleESTCACerts(w http.ResponseWriter, r *http.Request) error {
	if err := s.estLabel(r); err != nil {
		return err
	}
	certs := pemCertificates(s.deps.Lifecycle.Bundle())
	if len(certs) == 0 {
		return fmt.Errorf("api: est cacerts: empty CA bundle: %w", registry.ErrUnavailable)
	}
	p7, err := certsOnly(certs...)
	if err != nil {
		return err
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeEST(w, estCertsOnly, p7)
	return nil
}

// ASN.1 of GET csrattrs (RFC 7030 §4.5.2: CsrAttrs ::= SEQUENCE SIZE (0..MAX)
// OF AttrOrOID).
type estCSRAttrsBody struct {
	CommonName asn1.ObjectIdentifier // the agent name goes in the subject CN
	ECKey      estAttribute          // an EC key on P-256
	SigAlg     asn1.ObjectIdentifier // signed with ECDSA and SHA-256
}

type estAttribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.ObjectIdentifier `asn1:"set"`
}

// handleESTCSRAttrs serves GET csrattrs (RFC 7030 §4.5): what ATR asks of a
// CSR. CsrAttrs { commonName (2.5.4.3), id-ecPublicKey (1.2.840.10045.2.1)
// with secp256r1 (1.2.840.10045.3.1.7), ecdsa-with-SHA256 (1.2.840.10045.4.3.2) }:
// the agent name in the subject CN, an ECDSA P-256 key, signed with SHA-256.
// That is the recommendation; the CSR policy also accepts P-384, Ed25519 and
// RSA 2048–4096 keys.
func (s *Server) handleESTCSRAttrs(w http.ResponseWriter, r *http.Request) error {
	if err := s.estLabel(r); err != nil {
		return err
	}
	der, err := asn1.Marshal(estCSRAttrsBody{
		CommonName: asn1.ObjectIdentifier{2, 5, 4, 3},
		ECKey: estAttribute{Type: asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1},
			Values: []asn1.ObjectIdentifier{{1, 2, 840, 10045, 3, 1, 7}}},
		SigAlg: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2},
	})
	if err != nil {
		return fmt.Errorf("api: est csrattrs: %w", err)
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeEST(w, estCSRAttrs, der)
	return nil
}

// readESTCSR reads an EST enrollment body (RFC 7030 §4.2.1): Content-Type
// application/pkcs10, a base64 DER PKCS#10 (whitespace and line breaks
// allowed; Content-Transfer-Encoding is ignored, RFC 8951 §3.2). The CSR is
// parsed strictly and its self-signature checked (ca.ParseCSR), as the
// registry will again.
func readESTCSR(r *http.Request) ([]byte, *x509.CertificateRequest, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != estPKCS10 {
		return nil, nil, &apiError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType,
			Message: "Content-Type must be application/pkcs10 (a base64 DER PKCS#10 request)"}
	}
	body, err := readAll(r)
	if err != nil {
		return nil, nil, err
	}
	b64 := strings.Map(func(c rune) rune {
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			return -1
		}
		return c
	}, string(body))
	der, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if der, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return nil, nil, errInvalid("the body is not base64 (RFC 7030 §4.2.1: base64 of the DER PKCS#10 request)")
		}
	}
	if len(der) == 0 || der[0] != 0x30 {
		return nil, nil, errInvalid("the body is not a DER PKCS#10 request")
	}
	csr, err := ca.ParseCSR(der)
	if err != nil {
		return nil, nil, &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest,
			Message: "the certificate request is malformed, its self-signature does not verify, or its key is not accepted", cause: err}
	}
	return der, csr.Request(), nil
}

// estName is the agent a CSR names: its subject common name, or its one URI SAN
// spiffe://<trust domain>/agent/<name>; when both are present they must name
// the same agent. Other subject attributes and SANs are ignored (the
// certificate's names come from the profile). "" when the CSR names no agent.
func (s *Server) estName(csr *x509.CertificateRequest) (string, error) {
	var cns []string
	for _, atv := range csr.Subject.Names {
		if atv.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 3}) { // commonName
			v, ok := atv.Value.(string)
			if !ok {
				return "", errInvalid("the subject common name is not a string")
			}
			cns = append(cns, v)
		}
	}
	var name string
	switch len(cns) {
	case 0:
	case 1:
		n, err := ca.NormalizeAgentName(cns[0])
		if err != nil {
			return "", &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest,
				Message: "the subject common name is not a valid agent name", cause: err}
		}
		name = n
	default:
		return "", errInvalid("the subject has more than one common name")
	}
	switch len(csr.URIs) {
	case 0:
	case 1:
		n, err := ca.AgentName(&x509.Certificate{URIs: csr.URIs}, s.cfg.TrustDomain)
		if err != nil {
			return "", &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest,
				Message: "the URI SAN is not spiffe://" + s.cfg.TrustDomain + "/agent/<name>", cause: err}
		}
		if name != "" && n != name {
			return "", errInvalid("the subject common name and the URI SAN name different agents")
		}
		name = n
	default:
		return "", errInvalid("the request has more than one URI SAN")
	}
	return name, nil
}

// estEnrollRequest checks the label of an enrollment request and returns its
// CSR (DER) and the agent name the CSR gives ("" when it names none).
func (s *Server) estEnrollRequest(r *http.Request) (der []byte, name string, err error) {
	if err := s.estLabel(r); err != nil {
		return nil, "", err
	}
	der, csr, err := readESTCSR(r)
	if err != nil {
		return nil, "", err
	}
	name, err = s.estName(csr)
	if err != nil {
		return nil, "", err
	}
	return der, name, nil
}

// handleESTSimpleEnroll serves POST simpleenroll (RFC 7030 §4.2.1): an owner's
// API key (HTTP Basic password, or Bearer) registers the agent the CSR names,
// exactly as POST /v1/agents does. The answer is the issued certificate alone
// (§4.2.3); the chain is GET cacerts.
func (s *Server) handleESTSimpleEnroll(w http.ResponseWriter, r *http.Request) error {
	der, name, err := s.estEnrollRequest(r)
	if err != nil {
		return err
	}
	if name == "" {
		return errInvalid("the request names no agent: put the agent name in the subject CN (or a spiffe://" + s.cfg.TrustDomain + "/agent/<name> URI SAN)")
	}
	iss, err := s.deps.Lifecycle.Register(r.Context(), actorOf(r), registry.RegisterRequest{Name: name, CSR: der})
	s.metrics.issuance.WithLabelValues("register", outcome(err)).Inc()
	if errors.Is(err, registry.ErrConflict) {
		return &apiError{Status: http.StatusConflict, Code: CodeConflict,
			Message: "the agent already exists: renew it with simplereenroll", cause: err}
	}
	if err != nil {
		return fmt.Errorf("api: est simpleenroll: %w", err)
	}
	return writeESTIssued(w, iss)
}

// handleESTSimpleReenroll serves POST simplereenroll (RFC 7030 §4.2.2): the
// agent over mTLS with its current certificate (or its owner's API key) gets a
// new certificate, exactly as POST /v1/agents/{name}/rotate does; the old one is
// superseded. Over mTLS a CSR that names no agent renews the client
// certificate's agent, and one that names another agent is refused; with an
// API key the CSR must name the agent.
func (s *Server) handleESTSimpleReenroll(w http.ResponseWriter, r *http.Request) error {
	der, name, err := s.estEnrollRequest(r)
	if err != nil {
		return err
	}
	actor := actorOf(r)
	switch {
	case actor.AgentName != "" && name == "":
		name = actor.AgentName
	case actor.AgentName != "" && name != actor.AgentName:
		return &apiError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "the request names another agent than the client certificate"}
	case name == "":
		return errInvalid("the request names no agent: put the agent name in the subject CN (or a spiffe://" + s.cfg.TrustDomain + "/agent/<name> URI SAN)")
	}
	// The rotate limit of POST /v1/agents/{name}/rotate, same buckets.
	if err := s.allowAction(w, r, limitRotate, &actor, name); err != nil {
		return err
	}
	iss, err := s.deps.Lifecycle.Rotate(r.Context(), actor, name, der)
	s.metrics.issuance.WithLabelValues("rotate", outcome(err)).Inc()
	if err != nil {
		return fmt.Errorf("api: est simplereenroll: %w", err)
	}
	return writeESTIssued(w, iss)
}

// writeESTIssued answers an enrollment: the issued certificate as a certs-only
// PKCS#7 (RFC 7030 §4.2.3), and its log index in ATR-Log-Index.
func writeESTIssued(w http.ResponseWriter, iss *registry.Issued) error {
	leaf := pemCertificates([]byte(iss.CertificatePEM))
	if len(leaf) != 1 {
		return fmt.Errorf("api: est: the registry returned %d certificates, want 1", len(leaf))
	}
	p7, err := certsOnly(leaf[0])
	if err != nil {
		return err
	}
	w.Header().Set("ATR-Log-Index", strconv.FormatInt(iss.LogIndex, 10))
	writeEST(w, estCertsOnly, p7)
	return nil
}
