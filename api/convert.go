package api

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
)

// Conversions from registry types to the wire types of api/client.

func certificateBody(iss *registry.Issued) client.Certificate {
	return client.Certificate{
		Name:              iss.Agent.Name,
		Owner:             iss.Agent.Owner,
		Status:            iss.Agent.Status,
		Serial:            iss.Certificate.Serial,
		FingerprintSHA256: iss.Certificate.FingerprintSHA256,
		NotBefore:         iss.Certificate.NotBefore.UTC(),
		NotAfter:          iss.Certificate.NotAfter.UTC(),
		Certificate:       iss.CertificatePEM,
		Chain:             iss.ChainPEM,
		LogIndex:          iss.LogIndex,
		Opened:            iss.Opened,
		Receipt:           iss.Receipt,
	}
}

// writeCertificate answers with iss as a client.Certificate: the bytes
// writeJSONStatus(w, status, certificateBody(iss)) writes, without
// encoding/json compacting the opened entry and the receipt once more. Both
// are compact JSON translog's Marshal made for this issuance, and both are
// the last fields of the object; compacting them again was ~2 % of a
// rotation's CPU (docs/performance-history.md, sixteenth pass).
// TestWriteCertificateMatchesMarshal holds the bytes equal.
func writeCertificate(w http.ResponseWriter, status int, iss *registry.Issued) {
	body := certificateBody(iss)
	opened, receipt := body.Opened, body.Receipt
	body.Opened, body.Receipt = nil, nil
	buf := scratchBuffer()
	defer buf.release()
	b, err := marshalThenRaw(buf.b, body, rawField{"opened", opened}, rawField{"receipt", receipt})
	buf.b = b
	writeJSONBytes(w, status, b, err)
}

// writeVerifyResult answers with out as writeJSONStatus would, without
// compacting its receipt again (the cached receipt is compact JSON that
// translog's Marshal made; ~3 % of a verify's CPU, eighteenth pass).
// TestWriteVerifyResultMatchesMarshal holds the bytes equal.
func writeVerifyResult(w http.ResponseWriter, out client.VerifyResult) {
	receipt := out.Receipt
	out.Receipt = nil
	buf := scratchBuffer()
	defer buf.release()
	b, err := marshalThenRaw(buf.b, out, rawField{"receipt", receipt})
	buf.b = b
	writeJSONBytes(w, http.StatusOK, b, err)
}

// rawField is a field of compact JSON that marshalThenRaw appends.
type rawField struct {
	name string // a JSON name that needs no escaping
	raw  json.RawMessage
}

// marshalThenRaw appends to dst json.Marshal(v) — a struct, so a JSON
// object — with the non-empty raw fields appended to the object in order.
// Each must be a field of v's type that v leaves empty and omits, and the
// last ones of the type, so that the bytes are json.Marshal's for v with
// them set, as long as each is compact JSON that json.Marshal made (HTML
// characters escaped). It leaves room for the newline writeJSONBytes adds.
func marshalThenRaw(dst []byte, v any, fields ...rawField) ([]byte, error) {
	w := bytes.NewBuffer(dst[:0])
	if err := json.NewEncoder(w).Encode(v); err != nil { // the object, then a newline
		return nil, err
	}
	b := w.Bytes()
	b = b[:len(b)-2] // reopen the object
	size := len(b) + 2
	for _, f := range fields {
		size += len(f.name) + len(f.raw) + 4
	}
	b = slices.Grow(b, size-len(b))
	for _, f := range fields {
		if len(f.raw) > 0 {
			if len(b) > 1 {
				b = append(b, ',')
			}
			b = append(append(append(append(b, '"'), f.name...), `":`...), f.raw...)
		}
	}
	return append(b, '}'), nil
}

// A scratch is a buffer for one request's body or answer, or for what a
// coalescing connection holds (TLS records, or plain HTTP), reused: a
// verify's body and answer were ~5.5 KB of its ~20 KB of garbage.
type scratch struct{ b []byte }

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// maxScratch is the largest buffer a scratch keeps for the next request.
const maxScratch = 64 << 10

func scratchBuffer() *scratch { return scratchPool.Get().(*scratch) }

// release returns the buffer for another request; nothing may use its
// bytes after.
func (s *scratch) release() {
	if cap(s.b) > maxScratch {
		s.b = nil
	}
	s.b = s.b[:0]
	scratchPool.Put(s)
}

func agentBody(a *registry.Agent) client.Agent {
	caps := a.Capabilities
	if caps == nil {
		caps = []string{}
	}
	meta := a.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return client.Agent{
		Name: a.Name, Owner: a.Owner, Status: a.Status, Capabilities: caps, Metadata: meta,
		CurrentSerial: a.CurrentSerial, CreatedAt: a.CreatedAt.UTC(), UpdatedAt: a.UpdatedAt.UTC(),
	}
}

func recordBody(c *registry.CertificateRecord) client.CertificateRecord {
	return client.CertificateRecord{
		Serial: c.Serial, FingerprintSHA256: c.FingerprintSHA256, Status: c.Status,
		RevocationReason: c.RevocationReason, NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		RevokedAt: utcPtr(c.RevokedAt), Predecessor: c.Predecessor, Successor: c.Successor, LogIndex: c.LogIndex,
	}
}

func apiKeyBody(k *registry.APIKey) client.APIKey {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return client.APIKey{
		ID: k.ID, Owner: k.Owner, Namespace: k.Namespace, Scopes: scopes, CreatedAt: k.CreatedAt.UTC(),
		ExpiresAt: utcPtr(k.ExpiresAt), RevokedAt: utcPtr(k.RevokedAt), LastUsedAt: utcPtr(k.LastUsedAt),
	}
}

func auditBody(e *registry.AuditEvent) client.AuditEvent {
	return client.AuditEvent{
		ID: e.ID, Time: e.Time.UTC(), Actor: e.Actor, ActorOwner: e.ActorOwner, RequestID: e.RequestID,
		IP: e.IP, Action: e.Action, Target: e.Target, Result: e.Result, Metadata: e.Metadata, LogIndex: e.LogIndex,
	}
}

func hashes(hs []tlog.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = append([]byte(nil), hs[i][:]...)
	}
	return out
}

func parseCert(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return c, nil
}
