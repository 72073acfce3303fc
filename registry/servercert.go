package registry

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// This file issues the registry's own TLS server certificate. A CA must not
// sign what it does not record: the server certificate goes through the
// same ordering as an agent certificate (DESIGN.md "Issuance"), with its own
// table, server_certificates, and its own log entry type, server_cert.

// ActionServerCertIssue is the audit action of IssueServerCertificate.
const ActionServerCertIssue = "server_cert.issue"

// kindServerCert names server certificates in Reconcile's audit events.
const kindServerCert = "server_cert"

// ServerCertificate is a TLS server certificate of the registry itself,
// issued by IssueServerCertificate.
type ServerCertificate struct {
	Certificate *x509.Certificate
	// Chain is what a TLS server sends after its certificate: the issuing
	// certificate and the certificates above it, without the self-signed
	// root.
	Chain []*x509.Certificate
	// Serial is in the canonical spelling of ca.FormatSerial;
	// FingerprintSHA256 is 64 lowercase hex digits.
	Serial, FingerprintSHA256 string
	// LogIndex is the index of its server_cert entry in the transparency log.
	LogIndex int64
}

// IssueServerCertificate issues a TLS server certificate for the registry
// itself over pub (the server's TLS key, which the caller keeps) for the DNS
// names dns and the IP addresses ips, valid for lifetime (0 means
// ca.DefaultTLSServerLifetime; see ca.Issuer.PrepareServer for the profile
// and the limits). The steps, in the order DESIGN.md fixes for every
// certificate the issuing key signs:
//
//  1. Draw a random serial and build + lint the TBS (Issuer.PrepareServer).
//  2. Record serial and TBS in server_certificates as pending and commit
//     (durable) — before signing.
//  3. Sign through the token (Issuer.Sign checks the TBS is the linted one).
//  4. In one transaction: the server_cert log entry (fingerprint, issuer key
//     ID and the certificate, which is public), the row marked issued with
//     its fingerprint, DER and log index, and the audit event
//     server_cert.issue.
//  5. Return the certificate (only after the commit, so the server never
//     presents a certificate the registry does not know).
//
// A failure after step 2 marks the row abandoned (or leaves it pending for
// Reconcile, which abandons it: nothing is ever re-signed). Refused inputs
// are ErrInvalid; a missing issuer or a failing token is ErrUnavailable.
// It is an operation of the server itself, audited as the system actor; it
// takes no Actor and must never be reachable from a request.
func (r *Registry) IssueServerCertificate(ctx context.Context, pub crypto.PublicKey, dns []string, ips []net.IP, lifetime time.Duration) (*ServerCertificate, error) {
	if r.issuer == nil {
		return nil, fmt.Errorf("registry: server certificate: no issuer configured: %w", bare(ErrUnavailable))
	}
	// Step 1: serial and linted TBS.
	serial, err := ca.NewSerial(r.rand)
	if err != nil {
		return nil, fmt.Errorf("registry: server certificate: serial: %w: %v", bare(ErrUnavailable), err)
	}
	now := r.now()
	prep, err := r.issuer.PrepareServer(pub, dns, ips, serial, now, lifetime)
	if err != nil {
		var pe *ca.PolicyError
		if errors.As(err, &pe) {
			return nil, invalid("server certificate", err)
		}
		r.log.WithError(err).Error("pre-issuance lint refused the server certificate")
		return nil, fmt.Errorf("registry: server certificate: preparing: %v", err)
	}
	serialHex := ca.FormatSerial(serial)
	issuerKeyID := hex.EncodeToString(r.issuer.Certificate().SubjectKeyId)
	ipText := make([]string, 0, len(ips))
	for _, ip := range ips {
		ipText = append(ipText, ip.String())
	}
	dnsJSON, _ := json.Marshal(append([]string{}, dns...))
	ipJSON, _ := json.Marshal(ipText)

	// Step 2: record before sign.
	if err := r.store.inTx(ctx, "server certificate: recording pending issuance", func(tx *sqlx.Tx) error {
		return wrap("server certificate", certs(tx).InsertServerPending(ctx, serverCertRow{Serial: serialHex, IssuerKeyID: issuerKeyID,
			DNSNames: string(dnsJSON), IPAddresses: string(ipJSON), TBS: prep.TBS(),
			NotBefore: prep.NotBefore(), NotAfter: prep.NotAfter(), CreatedAt: now, UpdatedAt: now}))
	}); err != nil {
		return nil, err
	}

	// Step 3: the real signature, through the token.
	cert, err := r.issuer.Sign(prep)
	if err != nil {
		r.abandonServerCert(ctx, serialHex, "signing failed")
		r.log.WithError(err).WithField("serial", serialHex).Error("signing the server certificate failed")
		return nil, fmt.Errorf("registry: server certificate: signing: %w: %v", bare(ErrUnavailable), err)
	}
	sum := sha256.Sum256(cert.Raw)
	fp := hex.EncodeToString(sum[:])

	// Step 4: log entry, row issued and audit event in one transaction.
	var idx int64
	err = r.store.inTx(ctx, "server certificate: storing", func(tx *sqlx.Tx) error {
		var err error
		idx, _, err = r.tlog.appendTx(ctx, tx, translog.Entry{
			Version:     translog.EntryVersion,
			Type:        translog.EventServerCert,
			Time:        now,
			Fingerprint: fp,
			IssuerKeyID: hex.EncodeToString(cert.AuthorityKeyId),
			Certificate: cert.Raw,
		})
		if err != nil {
			return dbErr("server certificate: log", err)
		}
		if ok, err := certs(tx).MarkServerIssued(ctx, serialHex, fp, cert.Raw, idx, now); err != nil {
			return wrap("server certificate", err)
		} else if !ok {
			// Reconcile abandoned it meanwhile (signing outlasted
			// PendingTimeout): the certificate must never be served.
			return fmt.Errorf("registry: server certificate: pending issuance %s was reconciled before it completed: %w", serialHex, bare(ErrUnavailable))
		}
		return r.writeAudit(ctx, tx, SystemActor(), ActionServerCertIssue, serialHex, ResultSuccess, map[string]string{
			"serial": serialHex, "fingerprint_sha256": fp, "dns_names": strings.Join(dns, " "), "ip_addresses": strings.Join(ipText, " "),
			"not_after": cert.NotAfter.UTC().Format(time.RFC3339)}, &idx)
	})
	if err != nil {
		r.abandonServerCert(ctx, serialHex, errCode(err))
		return nil, err
	}
	r.log.WithFields(map[string]any{"serial": serialHex, "fingerprint": fp, "log_index": idx}).Info("server certificate issued")

	// Step 5.
	var chain []*x509.Certificate
	for _, c := range r.issuer.Chain() {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			continue // a root: relying parties have it already
		}
		chain = append(chain, c)
	}
	return &ServerCertificate{Certificate: cert, Chain: chain, Serial: serialHex, FingerprintSHA256: fp, LogIndex: idx}, nil
}

// abandonServerCert marks a pending server certificate abandoned (the
// certificate, if signed, was never served) and audits it. Best effort:
// Reconcile catches what this misses.
func (r *Registry) abandonServerCert(ctx context.Context, serial, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var ok bool
	err := r.store.inStatement(ctx, "abandon server certificate", func(q sqlx.ExtContext) error {
		var err error
		ok, err = certs(q).AbandonServer(ctx, serial, r.now())
		return err
	})
	if err != nil {
		r.log.WithError(err).WithField("serial", serial).Error("marking pending server certificate abandoned")
		return
	}
	if ok {
		r.auditBestEffort(ctx, SystemActor(), ActionServerCertIssue, serial, ResultError, map[string]string{"serial": serial, "pending": pendingAbandoned, "error": why})
	}
}

// reconcileServerCerts is Reconcile for server_certificates: every row
// still pending after PendingTimeout becomes abandoned and is audited. A
// pending server certificate is never "issued after the fact": the row, the
// log entry and the audit event commit together, and the server presents a
// certificate only after that commit, so a signed but unrecorded certificate
// was never served and never will be.
func (r *Registry) reconcileServerCerts(ctx context.Context) (int, error) {
	serials, err := certs(r.store.db).StaleServerPending(ctx, r.now().Add(-r.cfg.PendingTimeout))
	if err != nil {
		return 0, wrap("reconcile", err)
	}
	settled := 0
	for _, serial := range serials {
		did := false
		err := r.store.inTx(ctx, "reconcile server certificate", func(tx *sqlx.Tx) error {
			if ok, err := certs(tx).AbandonServer(ctx, serial, r.now()); err != nil {
				return wrap("reconcile", err)
			} else if !ok {
				return nil // settled by someone else
			}
			did = true
			return r.writeAudit(ctx, tx, SystemActor(), ActionReconcile, serial, ResultAbandoned, map[string]string{
				"serial": serial, "kind": kindServerCert, "state": pendingAbandoned}, nil)
		})
		if err != nil {
			return settled, err
		}
		if did {
			settled++
			r.log.WithField("serial", serial).Warn("reconciled pending server certificate")
		}
	}
	return settled, nil
}

// ServerCertificateRecord is a row of server_certificates, for operators,
// revocation and tests. FingerprintSHA256, DER and LogIndex are set once
// State is "issued".
type ServerCertificateRecord struct {
	Serial, State, IssuerKeyID, FingerprintSHA256 string
	DNSNames, IPAddresses                         []string
	TBS, DER                                      []byte
	LogIndex                                      *int64
	NotBefore, NotAfter, CreatedAt, UpdatedAt     time.Time
}

// ServerCertificates lists the server certificate records (all states),
// oldest first.
func (s *Store) ServerCertificates(ctx context.Context) ([]ServerCertificateRecord, error) {
	rows, err := certs(s.db).ServerCertificates(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ServerCertificateRecord, len(rows))
	for i, row := range rows {
		rec := ServerCertificateRecord{Serial: row.Serial, State: row.State, IssuerKeyID: row.IssuerKeyID, TBS: row.TBS, DER: row.DER,
			LogIndex: row.LogIndex, NotBefore: row.NotBefore.UTC(), NotAfter: row.NotAfter.UTC(), CreatedAt: row.CreatedAt.UTC(), UpdatedAt: row.UpdatedAt.UTC()}
		if row.Fingerprint != nil {
			rec.FingerprintSHA256 = *row.Fingerprint
		}
		if err := json.Unmarshal([]byte(row.DNSNames), &rec.DNSNames); err != nil {
			return nil, fmt.Errorf("registry: server certificate %s: dns_names: %v", row.Serial, err)
		}
		if err := json.Unmarshal([]byte(row.IPAddresses), &rec.IPAddresses); err != nil {
			return nil, fmt.Errorf("registry: server certificate %s: ip_addresses: %v", row.Serial, err)
		}
		out[i] = rec
	}
	return out, nil
}
