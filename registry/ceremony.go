package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// ActionCARecord is the audit action of RecordCACertificates.
const ActionCARecord = "ca.record"

// ceremonyActor is the log and audit actor of CA certificates: they come from
// a key ceremony, not from an API caller.
const ceremonyActor = "ceremony"

// RecordCACertificates puts each CA certificate (root or issuing CA) into the
// transparency log once, as a "ceremony" entry carrying the certificate DER,
// so auditors see every key ceremony — an intermediate rotation included —
// in the same append-only log as the issuances it enables. serve calls it at
// start-up with the certificates it found on the token. It is idempotent
// across restarts and replicas (the fingerprint is a primary key) and returns
// how many certificates it newly recorded.
func (r *Registry) RecordCACertificates(ctx context.Context, certs []*x509.Certificate) (int, error) {
	n := 0
	for _, c := range certs {
		if c == nil || !c.IsCA {
			return n, fmt.Errorf("registry: record CA certificates: %w: not a CA certificate", ErrInvalid)
		}
		recorded, err := r.recordCA(ctx, c)
		if err != nil {
			return n, err
		}
		if recorded {
			n++
		}
	}
	return n, nil
}

func (r *Registry) recordCA(ctx context.Context, c *x509.Certificate) (bool, error) {
	sum := sha256.Sum256(c.Raw)
	fp := hex.EncodeToString(sum[:])
	isRoot := bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
	now := r.now()
	actor := Actor{KeyID: ceremonyActor}
	err := r.store.inTx(ctx, "record CA certificate", func(tx *sqlx.Tx) error {
		var seen []string
		if err := tx.SelectContext(ctx, &seen, tx.Rebind(`SELECT fingerprint_sha256 FROM ca_certificates WHERE fingerprint_sha256 = ?`), fp); err != nil {
			return dbErr("record CA certificate: read", err)
		}
		if len(seen) > 0 {
			return errAlreadyRecorded
		}
		// The insert comes first: a replica racing us fails on the primary
		// key and rolls back before anything reaches the log.
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO ca_certificates
			(fingerprint_sha256, subject, is_root, not_after, recorded_at) VALUES (?, ?, ?, ?, ?)`),
			fp, c.Subject.String(), isRoot, dbTime(c.NotAfter), dbTime(now)); err != nil {
			return dbErr("record CA certificate: insert", err)
		}
		issuerKeyID := c.AuthorityKeyId
		if isRoot || len(issuerKeyID) == 0 {
			issuerKeyID = c.SubjectKeyId
		}
		idx, _, err := r.tlog.appendTx(ctx, tx, translog.Entry{
			Version:     translog.EntryVersion,
			Type:        translog.EventCeremony,
			Time:        now,
			Fingerprint: fp,
			IssuerKeyID: hex.EncodeToString(issuerKeyID),
			Certificate: c.Raw,
		})
		if err != nil {
			return dbErr("record CA certificate: log", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE ca_certificates SET log_index = ? WHERE fingerprint_sha256 = ?`), idx, fp); err != nil {
			return dbErr("record CA certificate: update", err)
		}
		md := map[string]string{"subject": c.Subject.String(), "root": fmt.Sprint(isRoot)}
		return r.writeAudit(ctx, tx, actor, ActionCARecord, fp, ResultSuccess, md, &idx)
	})
	switch {
	case errors.Is(err, errAlreadyRecorded), errors.Is(err, ErrConflict):
		return false, nil
	case err != nil:
		return false, err
	}
	r.log.WithField("fingerprint", fp).WithField("subject", c.Subject.String()).Info("CA certificate recorded in the transparency log")
	return true, nil
}

// errAlreadyRecorded ends the recording transaction without writing.
var errAlreadyRecorded = errors.New("registry: CA certificate already recorded")
