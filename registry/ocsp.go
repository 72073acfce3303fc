package registry

// OCSP (RFC 6960) for each issuing CA.
//
// An OCSP query costs one primary-key read of the certificate's row. The
// answer is a pre-signed response from a bounded in-process cache or from
// the shared ocsp_responses table, served only while the status it states
// still equals the row just read and it is younger than 2/3 of its
// validity; otherwise it is signed again, at most once at a time per
// (serial, hash algorithm, status) thanks to singleflight. So a flood of
// queries is a flood of cheap reads, not of HSM signatures, and a revocation
// made anywhere is answered at the next query.
//
// DecodeOCSPGet is the one decoder of the GET form of a request.

import (
	"context"
	"crypto"
	"crypto/sha1" //nolint:gosec // OCSP CertID hashes: SHA-1 is what most clients send (RFC 6960 4.1.1)
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
)

// ---------------------------------------------------------------------------
// Certificate status as each responder states it (statusAt, status.go)

// certificateState reads one certificate's row by serial (primary key) and
// returns its state at now as r states it; serials r never issued have
// status ocsp.Unknown.
func (s *revocationService) certificateState(ctx context.Context, r *responder, serial string, now time.Time) (certState, error) {
	row, err := certs(s.db).Status(ctx, serial)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return s.serverCertificateState(ctx, r, serial, now)
		}
		return certState{}, wrap("ocsp", err)
	}
	issuer := ""
	if row.IssuerKeyID != nil {
		issuer = *row.IssuerKeyID
	} else if issuer, err = s.store.issuerOf(ctx, row.Serial); errors.Is(err, errUnparsableDER) {
		return certState{status: ocsp.Unknown}, nil // names no CA (BackfillIssuers records it so)
	} else if err != nil {
		return certState{}, wrap("ocsp", err) // a row from a replica older than migration 007
	}
	if issuer != r.keyID {
		return certState{status: ocsp.Unknown}, nil // another CA's serial
	}
	return s.stateOf(*row, r.keyID, now), nil
}

// serverCertificateState is certificateState for the registry's own TLS
// server certificates (servercert.go): an issued one is good until it
// expires (they are never revoked; a new one replaces it), unless its issuer
// was revoked by its root; anything else is unknown, as for agent serials.
func (s *revocationService) serverCertificateState(ctx context.Context, r *responder, serial string, now time.Time) (certState, error) {
	row, err := certs(s.db).ServerStatus(ctx, serial)
	if errors.Is(err, ErrNotFound) || (err == nil && row.IssuerKeyID != r.keyID) {
		return certState{status: ocsp.Unknown}, nil
	} else if err != nil {
		return certState{}, wrap("ocsp", err)
	}
	st := certState{status: ocsp.Good, notAfter: row.NotAfter.UTC()}
	if c, revoked := s.arl.revoked(r.keyID); revoked {
		st = st.underRevokedCA(c)
	}
	return st, nil
}

// ---------------------------------------------------------------------------
// OCSP

// issuerHashes are the CertID hashes (RFC 6960 4.1.1) of the issuing CA.
type issuerHashes struct{ name, key []byte }

// certIDHashAlgs are the request hash algorithms golang.org/x/crypto/ocsp
// parses.
func certIDHashAlgs() []crypto.Hash {
	return []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}
}

// hashName is how ocsp_responses.hash_alg names h.
func hashName(h crypto.Hash) string {
	switch h {
	case crypto.SHA1:
		return "sha1"
	case crypto.SHA256:
		return "sha256"
	case crypto.SHA384:
		return "sha384"
	case crypto.SHA512:
		return "sha512"
	}
	return h.String()
}

func newHash(h crypto.Hash) hash.Hash {
	switch h {
	case crypto.SHA1:
		return sha1.New() //nolint:gosec // CertID hash, see import
	case crypto.SHA256:
		return sha256.New()
	case crypto.SHA384:
		return sha512.New384()
	case crypto.SHA512:
		return sha512.New()
	}
	return nil
}

// certIDHashes computes issuerNameHash (over the DER subject) and
// issuerKeyHash (over the subjectPublicKey BIT STRING value) of issuer.
func certIDHashes(issuer *x509.Certificate) (map[crypto.Hash]issuerHashes, error) {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, fmt.Errorf("registry: ocsp: parsing issuer public key: %w", err)
	}
	out := map[crypto.Hash]issuerHashes{}
	for _, h := range certIDHashAlgs() {
		n, k := newHash(h), newHash(h)
		n.Write(issuer.RawSubject)
		k.Write(spki.PublicKey.RightAlign())
		out[h] = issuerHashes{name: n.Sum(nil), key: k.Sum(nil)}
	}
	return out, nil
}

// ocspVerdict is the outcome of checking a request before any lookup.
type ocspVerdict int

const (
	ocspOK           ocspVerdict = iota
	ocspMalformed                // unparsable, or a serial RFC 5280 forbids
	ocspUnauthorized             // a CA other than ours
)

// parseOCSPRequest parses an untrusted DER request and checks that it asks
// about a certificate of the CA with the given CertID hashes. It never fails
// otherwise.
func parseOCSPRequest(raw []byte, hashes map[crypto.Hash]issuerHashes) (*ocsp.Request, ocspVerdict) {
	req, verdict := parseOCSPRequestOnly(raw)
	if verdict != ocspOK {
		return nil, verdict
	}
	if !hashesMatch(req, hashes) {
		return nil, ocspUnauthorized
	}
	return req, ocspOK
}

// matchOCSPRequest parses an untrusted DER request and picks the responder
// whose CertID hashes it names.
func matchOCSPRequest(raw []byte, rs map[string]*responder) (*ocsp.Request, *responder, ocspVerdict) {
	req, verdict := parseOCSPRequestOnly(raw)
	if verdict != ocspOK {
		return nil, nil, verdict
	}
	for _, r := range rs {
		if hashesMatch(req, r.hashes) {
			return req, r, ocspOK
		}
	}
	return nil, nil, ocspUnauthorized
}

func parseOCSPRequestOnly(raw []byte) (*ocsp.Request, ocspVerdict) {
	if len(raw) == 0 || len(raw) > MaxOCSPRequestSize {
		return nil, ocspMalformed
	}
	req, err := ocsp.ParseRequest(raw)
	if err != nil || req == nil || req.SerialNumber == nil {
		return nil, ocspMalformed
	}
	if req.SerialNumber.Sign() <= 0 || len(req.SerialNumber.Bytes()) > 20 {
		return nil, ocspMalformed
	}
	return req, ocspOK
}

func hashesMatch(req *ocsp.Request, hashes map[crypto.Hash]issuerHashes) bool {
	want, ok := hashes[req.HashAlgorithm]
	return ok && subtle.ConstantTimeCompare(req.IssuerNameHash, want.name) == 1 && subtle.ConstantTimeCompare(req.IssuerKeyHash, want.key) == 1
}

// ocsp answers a DER OCSP request with a DER OCSP response: good, revoked
// (reason and time; superseded certificates after their grace period as
// revoked/superseded) or, for serials never issued, unknown. A malformed
// request gets malformedRequest and a request for another CA unauthorized
// (both unsigned, RFC 6960 2.3); neither is an error. The error is only for
// a database or token failure (ErrUnavailable and friends). The returned
// slice may be shared with other callers: do not modify it.
func (s *revocationService) ocsp(ctx context.Context, raw []byte) ([]byte, error) {
	req, r, verdict := matchOCSPRequest(raw, s.responders)
	switch verdict {
	case ocspMalformed:
		return slices.Clone(ocsp.MalformedRequestErrorResponse), nil
	case ocspUnauthorized:
		return slices.Clone(ocsp.UnauthorizedErrorResponse), nil
	}
	serial := ca.FormatSerial(req.SerialNumber) // "" (unknown) for a zero or negative serial
	now := s.now()
	// The revision is read before the row: a cached answer tagged with it
	// is as new as the row read (a later change moves the revision).
	rev, live, err := s.currentRevision(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.arl.syncAt(ctx, s.db, rev); err != nil {
		return nil, err
	}
	seq := rev.seq
	key := ocspKey{issuer: r.keyID, serial: serial, alg: req.HashAlgorithm}
	if e := s.cache.get(key); live && e != nil && (e.seq == seq || s.serialUnchanged(serial, e.seq)) && e.state.status != ocsp.Unknown && now.Before(e.refreshAt) {
		s.ocspHits.Add(1)
		return e.der, nil // nothing changed anywhere since it was checked: no database read
	}
	s.ocspReads.Add(1)
	st, err := s.certificateState(ctx, r, serial, now)
	if err != nil {
		return nil, err
	}
	if e := s.cache.get(key); e != nil && e.state.same(st) && now.Before(e.refreshAt) {
		if e.seq != seq {
			s.cache.put(&ocspEntry{key: e.key, state: e.state, der: e.der, refreshAt: e.refreshAt, seq: seq})
		}
		return e.der, nil
	}
	v, err, _ := s.flight.Do("ocsp|"+r.keyID+"|"+serial+"|"+hashName(req.HashAlgorithm)+"|"+st.flightKey(), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revocationFlightTimeout)
		defer cancel()
		return s.ocspResponse(fctx, r, key, req.SerialNumber, st, seq)
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// ocspResponse returns a response stating st for key: from the cache, from
// ocsp_responses, or freshly signed (and then stored and cached).
func (s *revocationService) ocspResponse(ctx context.Context, r *responder, key ocspKey, serial *big.Int, st certState, seq int64) ([]byte, error) {
	now := s.now()
	if e := s.cache.get(key); e != nil && e.state.same(st) && now.Before(e.refreshAt) {
		return e.der, nil // a flight that ended just before ours cached it
	}
	algName := hashName(key.alg)
	if st.status == ocsp.Unknown {
		if s.unknown == nil || !s.unknown.Allow() {
			return slices.Clone(ocsp.UnauthorizedErrorResponse), nil
		}
	} else {
		var row struct {
			Status     string     `db:"status"`
			Reason     int        `db:"reason"`
			RevokedAt  *time.Time `db:"revoked_at"`
			GraceUntil *time.Time `db:"grace_until"`
			DER        []byte     `db:"der"`
			ThisUpdate time.Time  `db:"this_update"`
			NextUpdate time.Time  `db:"next_update"`
		}
		err := s.db.GetContext(ctx, &row, s.db.Rebind(`SELECT status, reason, revoked_at, grace_until, der, this_update, next_update
			FROM ocsp_responses WHERE serial = ? AND hash_alg = ?`), key.serial, algName)
		if err = dbErr("ocsp: reading stored response", err); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if err == nil {
			stored := certState{status: ocsp.Good, reason: row.Reason, notAfter: st.notAfter}
			if row.Status == "revoked" {
				stored.status = ocsp.Revoked
			}
			if row.RevokedAt != nil {
				stored.revokedAt = row.RevokedAt.UTC()
			}
			if row.GraceUntil != nil {
				stored.goodUntil = row.GraceUntil.UTC()
			}
			e := &ocspEntry{key: key, state: stored, der: row.DER, refreshAt: refreshPoint(row.ThisUpdate, row.NextUpdate), seq: seq}
			if stored.same(st) && now.Before(e.refreshAt) {
				s.cache.put(e)
				return e.der, nil
			}
		}
	}
	// Sign a new response.
	this := now.Truncate(time.Second)
	next := this.Add(s.cfg.OCSPValidity)
	if !st.goodUntil.IsZero() && next.After(st.goodUntil) {
		// Never vouch for a superseded certificate past its grace end.
		next = st.goodUntil.Truncate(time.Second)
		if !next.After(this) {
			next = this.Add(time.Second)
		}
	}
	tmpl := ocsp.Response{Status: st.status, SerialNumber: serial, IssuerHash: key.alg, ThisUpdate: this, NextUpdate: next}
	if st.status == ocsp.Revoked {
		tmpl.RevokedAt, tmpl.RevocationReason = st.revokedAt, st.reason
	}
	der, err := r.ca.SignOCSP(tmpl)
	if err != nil {
		return nil, fmt.Errorf("registry: ocsp: signing: %w: %v", bare(ErrUnavailable), err)
	}
	e := &ocspEntry{key: key, state: st, der: der, refreshAt: refreshPoint(this, next), seq: seq}
	if st.status != ocsp.Unknown {
		status := "good"
		if st.status == ocsp.Revoked {
			status = "revoked"
		}
		var revokedAt, goodUntil *time.Time
		if !st.revokedAt.IsZero() {
			t := dbTime(st.revokedAt)
			revokedAt = &t
		}
		if !st.goodUntil.IsZero() {
			t := dbTime(st.goodUntil)
			goodUntil = &t
		}
		if err := s.store.execStatement(ctx, "ocsp: storing response", `INSERT INTO ocsp_responses
			(serial, hash_alg, status, reason, revoked_at, grace_until, der, this_update, next_update, not_after)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (serial, hash_alg) DO UPDATE SET status = excluded.status, reason = excluded.reason,
				revoked_at = excluded.revoked_at, grace_until = excluded.grace_until, der = excluded.der,
				this_update = excluded.this_update, next_update = excluded.next_update, not_after = excluded.not_after`,
			key.serial, algName, status, st.reason, revokedAt, goodUntil, der, dbTime(this), dbTime(next), dbTime(st.notAfter)); err != nil {
			// The response is valid; other replicas will sign their own.
			s.log.WithError(err).WithField("serial", key.serial).Warn("storing OCSP response")
		}
	}
	s.cache.put(e)
	return der, nil
}

// DecodeOCSPGet decodes the {req} path element of GET /v1/ocsp/{req} (RFC
// 6960 appendix A.1: the URL-encoding of the base64 of the DER request) into
// the DER request. It accepts the element still URL-encoded or already
// decoded, standard base64 with or without padding, '+' mangled into ' '
// by form decoding, and the URL-safe alphabet (RFC 4648 §5; some clients
// send it, and the api always accepted it). Errors wrap ErrInvalid; the api layer then answers what
// OCSP(ctx, nil) returns (malformedRequest).
func DecodeOCSPGet(path string) ([]byte, error) {
	return decodeOCSPGet(path)
}

func decodeOCSPGet(path string) ([]byte, error) {
	if path == "" || len(path) > maxOCSPGetPathSize {
		return nil, invalid("ocsp request path empty or too long", nil)
	}
	p, err := url.PathUnescape(path)
	if err != nil {
		return nil, invalid("ocsp request path is not URL-encoded", nil)
	}
	p = strings.ReplaceAll(p, " ", "+")
	var der []byte
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err = enc.DecodeString(p); err == nil {
			break
		}
	}
	if err != nil || len(der) == 0 || len(der) > MaxOCSPRequestSize {
		return nil, invalid("ocsp request path is not base64 of a request", nil)
	}
	return der, nil
}

// ---------------------------------------------------------------------------
// The bounded in-process cache of signed OCSP responses.

type ocspKey struct {
	issuer string // the responder's key id
	serial string
	alg    crypto.Hash
}

type ocspEntry struct {
	key       ocspKey
	state     certState
	der       []byte // shared, never modified
	refreshAt time.Time
	seq       int64 // the revocation revision read before the row that state came from
}

// ocspCache holds at most max entries, the least recently used evicted.
type ocspCache struct {
	lru *lru.Cache[ocspKey, *ocspEntry]
}

func newOCSPCache(max int) *ocspCache {
	c, err := lru.New[ocspKey, *ocspEntry](max)
	if err != nil { // max < 1: RevocationConfig's defaults rule it out
		panic(fmt.Sprintf("registry: OCSP cache of %d entries", max))
	}
	return &ocspCache{lru: c}
}

// get returns the cached entry of k, or nil.
func (c *ocspCache) get(k ocspKey) *ocspEntry {
	e, _ := c.lru.Get(k)
	return e
}

// put caches e under e.key, replacing an entry of the same key.
func (c *ocspCache) put(e *ocspEntry) { c.lru.Add(e.key, e) }

func (c *ocspCache) len() int { return c.lru.Len() }

// OCSP answers a DER OCSP request (POST body, or DecodeOCSPGet of the GET
// path; at most MaxOCSPRequestSize bytes) with a DER OCSP response
// (application/ocsp-response, HTTP 200): good, revoked with reason and time,
// or unknown, pre-signed and cached; malformedRequest and unauthorized are
// responses too, not errors. The error is only for a database or token
// failure (ErrUnavailable), never for client input.
func (r *Registry) OCSP(ctx context.Context, req []byte) ([]byte, error) {
	if r.revocation == nil {
		return nil, fmt.Errorf("registry: ocsp: no issuer configured: %w", bare(ErrUnavailable))
	}
	return r.revocation.ocsp(ctx, req)
}
