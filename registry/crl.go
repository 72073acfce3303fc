package registry

// The full CRL of each issuing CA (RFC 5280).
//
// A CRL fetch costs one read of the revocation revision
// (revocation_state.seq, see revocation.go): the stored CRL is served while
// it was made at the current revision — or every revision since is a
// supersede (keptAcross) — before 2/3 of its validity, and before the next
// end of a rotation grace period (when a superseded certificate enters the
// list; grace ends make at most one CRL per crlGraceEndPace); otherwise a
// new one is made, off the
// group commit's writer, and stored under the CA's crl_issuers row lock
// (FOR UPDATE on PostgreSQL, the one writer on SQLite), which also
// serializes CRL numbers across replicas (loadOrMakeCRL). A revocation
// committed on any replica is therefore in the very next CRL fetched from
// any replica.

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
)

// storedCRL is an issuing CA's crl_issuers row: its last CRL.
type storedCRL struct {
	Number     int64      `db:"number"`
	Seq        int64      `db:"seq"`
	DER        []byte     `db:"der"`
	ThisUpdate *time.Time `db:"this_update"`
	NextUpdate *time.Time `db:"next_update"`
	StaleAt    *time.Time `db:"stale_at"`
}

// fresh reports whether c may be served at revision seq and time now.
func (c *storedCRL) fresh(seq int64, now time.Time) bool {
	return c != nil && c.Seq == seq && c.freshSince(seq, now)
}

// crlGraceEndPace is how often grace ends alone make a CRL again: a
// superseded certificate enters the CRL in the first one made at or after
// its grace end, at most this long after it (a revocation, in the very
// next). In a fleet that rotates all day some grace period ends every
// moment, and each end made the next fetch sign the whole list again (20 µs
// of CPU an entry).
const crlGraceEndPace = time.Minute

// freshSince reports whether c, stored in the database whose revision was
// seq or later when a fetch began, may answer that fetch at time now: it
// was made at revision seq or later (so it lists every revocation committed
// before the fetch), 2/3 of its validity has not passed, and no grace
// period has ended since it was made — or it was made less than
// crlGraceEndPace ago.
func (c *storedCRL) freshSince(seq int64, now time.Time) bool {
	if c == nil || len(c.DER) == 0 || c.ThisUpdate == nil || c.NextUpdate == nil || c.Seq < seq {
		return false
	}
	if c.StaleAt != nil && !now.Before(*c.StaleAt) && !now.Before(c.ThisUpdate.Add(crlGraceEndPace)) {
		return false
	}
	return now.Before(refreshPoint(*c.ThisUpdate, *c.NextUpdate))
}

// maxKeptAcross bounds the revisions keptAcross looks through: past it, a
// CRL is made again (a CRL of a fleet takes about as long as reading that
// many rows).
const maxKeptAcross = 1 << 16

// keptAcross returns c as the CRL at revision seq when c, made at an
// earlier revision, still lists what a CRL made now would, but for grace
// ends within crlGraceEndPace of its making (freshSince's rule): every
// revision since is a supersede alone (superseded_changes, supersedes.go).
// A superseded certificate enters the CRL only at its grace end, which
// becomes the copy's StaleAt when it is earlier. Rotations move the
// revision all the time in a fleet, and each made the next CRL fetch sign
// the whole list again (a second of CPU for 100,000 entries). Every
// replica applies the same rule to the same stored CRL, so replicas agree;
// one that kept a CRL while another stored a newer one (a longer range, or
// pruned rows, made it make one) adopts the newer (storedNewer). nil: make
// or adopt one.
func (s *revocationService) keptAcross(ctx context.Context, c *storedCRL, seq int64, now time.Time) *storedCRL {
	if c == nil || c.Seq >= seq || seq-c.Seq > maxKeptAcross || !c.freshSince(c.Seq, now) {
		return nil
	}
	end, ok, err := certs(s.db).SupersedesOnly(ctx, c.Seq, seq)
	if err != nil || !ok {
		return nil // a read that failed is the regeneration's to report
	}
	if !end.After(now) && !now.Before(c.ThisUpdate.Add(crlGraceEndPace)) {
		return nil // a grace end passed, and the pace with it: as freshSince
	}
	kept := *c
	kept.Seq = seq
	if kept.StaleAt == nil || end.Before(*kept.StaleAt) {
		kept.StaleAt = &end
	}
	return &kept
}

// storedNewer reports whether r's stored CRL has a number above number
// (or could not be read: loadOrMakeCRL then reads it again), so that a
// replica never serves a CRL older than one another replica served.
func (s *revocationService) storedNewer(ctx context.Context, r *responder, number int64) bool {
	var stored int64
	err := s.db.GetContext(ctx, &stored, s.db.Rebind(`SELECT number FROM crl_issuers WHERE issuer_key_id = ?`), r.keyID)
	return err != nil || stored > number
}

// crl returns the issuing CA's current full CRL (DER) and its nextUpdate.
func (s *revocationService) crl(ctx context.Context) ([]byte, time.Time, error) {
	return s.crlOf(ctx, s.current)
}

// crlOf returns the current full CRL (DER) of one issuing CA and its
// nextUpdate, regenerating it when it is stale (see the comment at the top
// of this file).
func (s *revocationService) crlOf(ctx context.Context, r *responder) ([]byte, time.Time, error) {
	seq, err := s.sync(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	r.mu.Lock()
	cur := r.lastCRL
	r.mu.Unlock()
	if cur.fresh(seq, s.now()) {
		return cur.DER, cur.NextUpdate.UTC(), nil
	}
	if kept := s.keptAcross(ctx, cur, seq, s.now()); kept != nil && !s.storedNewer(ctx, r, kept.Number) {
		r.setCRL(kept)
		return kept.DER, kept.NextUpdate.UTC(), nil
	}
	// The revision and the second are part of the key: a fetch that saw a
	// newer revision, or came a second later (a grace period may have ended
	// since), never joins a regeneration that started before it. Flights of
	// one process make one CRL at a time (loadOrMakeCRL), so a later flight
	// adopts what an earlier one stored when that is fresh enough.
	v, err, _ := s.flight.Do(fmt.Sprintf("crl|%s|%d|%d", r.keyID, seq, s.now().Unix()), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revocationFlightTimeout)
		defer cancel()
		return s.loadOrMakeCRL(fctx, r)
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	c := v.(*storedCRL)
	return c.DER, c.NextUpdate.UTC(), nil
}

// crlMakeTries bounds how often loadOrMakeCRL makes a CRL again because
// another process stored one older than the fetch under the number it
// signed.
const crlMakeTries = 4

// loadOrMakeCRL adopts the stored CRL of r if it answers this fetch (made at
// the revision the database had when the fetch began, or later, and fresh
// in time), else makes one and stores it under r's crl_issuers row lock,
// which serializes CRL numbers across replicas: a number is stored, and so
// served, at most once. One process makes one CRL of a CA at a time
// (responder.making): a fetch that waited adopts what the one before it
// stored.
//
// A CRL lists every unexpired revoked or superseded certificate of its CA
// (in a fleet that rotates, about one row per agent), so making one takes a
// while. Where writes go through the group commit's one writer (SQLite) it
// is made before the transaction that stores it, off the writer: made
// inside it, it held every issuance of the process for as long as it took
// (docs/performance-history.md, fifteenth pass; TestCRLMadeOffTheWriter). It is
// signed with the number after the stored one; if another process stored a
// CRL under that number meanwhile, that CRL is served when it answers the
// fetch, else a CRL is made again, and the one signed under a taken number
// is dropped unseen. On PostgreSQL, where a transaction of its own holds up
// no issuance, the CRL is made under the row lock, so replicas fetching at
// once make it once.
func (s *revocationService) loadOrMakeCRL(ctx context.Context, r *responder) (*storedCRL, error) {
	const sel = `SELECT number, seq, der, this_update, next_update, stale_at FROM crl_issuers WHERE issuer_key_id = ?`
	// A CA's first row continues the numbers of the single CRL of
	// migration 002 (see migration 007).
	if err := s.store.execStatement(ctx, "crl: creating state", `INSERT INTO crl_issuers (issuer_key_id, number, seq)
		SELECT ?, number, -1 FROM crl_state WHERE id = 1 ON CONFLICT (issuer_key_id) DO NOTHING`, r.keyID); err != nil {
		return nil, err
	}
	r.making.Lock()
	defer r.making.Unlock()
	offWriter := s.store.w != nil
	want := int64(-1) // the revision when this fetch began: what its CRL must reflect
	for range crlMakeTries {
		var row storedCRL
		if err := s.db.GetContext(ctx, &row, s.db.Rebind(sel), r.keyID); err != nil {
			return nil, dbErr("crl: reading state", err)
		}
		// The revision is read before the entries (makeCRL), so the CRL
		// reflects at least every change up to seq (a later one only makes
		// it stale early).
		seq, err := s.revocationSeq(ctx, s.db)
		if err != nil {
			return nil, err
		}
		if want < 0 {
			want = seq
		}
		if row.freshSince(want, s.now()) && signedBy(row.DER, r.ca.Certificate()) {
			r.setCRL(&row)
			return &row, nil
		}
		if kept := s.keptAcross(ctx, &row, want, s.now()); kept != nil && signedBy(row.DER, r.ca.Certificate()) {
			r.setCRL(kept)
			return kept, nil
		}
		var (
			made *storedCRL
			n    int
		)
		if offWriter {
			if made, n, err = s.makeCRL(ctx, s.db, r, row.Number+1, seq, s.now()); err != nil {
				return nil, err
			}
		}
		var out *storedCRL
		err = s.store.inTx(ctx, "crl: storing", func(tx *sqlx.Tx) error {
			var locked storedCRL
			if err := tx.GetContext(ctx, &locked, tx.Rebind(sel+forUpdate(s.dialect)), r.keyID); err != nil {
				return dbErr("crl: locking state", err)
			}
			if made == nil || locked.Number >= made.Number {
				// Another replica may have stored one that answers this fetch.
				now := s.now()
				if locked.freshSince(want, now) && signedBy(locked.DER, r.ca.Certificate()) {
					out = &locked
					return nil
				}
				if offWriter {
					return nil // signed under a number that is taken: make it again
				}
				cur, err := s.revocationSeq(ctx, tx)
				if err != nil {
					return err
				}
				if made, n, err = s.makeCRL(ctx, tx, r, locked.Number+1, cur, now); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE crl_issuers SET number = ?, seq = ?, der = ?, this_update = ?, next_update = ?, stale_at = ? WHERE issuer_key_id = ?`),
				made.Number, made.Seq, made.DER, made.ThisUpdate, made.NextUpdate, made.StaleAt, r.keyID); err != nil {
				return dbErr("crl: storing", err)
			}
			out = made
			return nil
		})
		if err != nil {
			return nil, err
		}
		if out == nil {
			continue
		}
		if out == made {
			s.log.WithFields(logrus.Fields{"issuer": r.keyID, "crl_number": made.Number, "entries": n, "revision": made.Seq}).Info("CRL regenerated")
		}
		r.setCRL(out)
		return out, nil
	}
	return nil, fmt.Errorf("registry: crl: %d times another process stored a CRL older than this fetch under the number it signed: %w", crlMakeTries, bare(ErrUnavailable))
}

// storedNextUpdate returns the nextUpdate of r's stored CRL without making
// one, unless none was stored yet: the CRL a fetch gets, or, when the
// revocation state changed since it was made, the one a fetch would
// replace. A metrics scrape reads it (api's CRL gauges): making a CRL there
// cost each scrape under a rotating fleet a regeneration of the whole list
// (a second for 48,000 entries; docs/performance-history.md, fifteenth pass).
func (s *revocationService) storedNextUpdate(ctx context.Context, r *responder) (time.Time, error) {
	var next *time.Time
	if err := s.db.GetContext(ctx, &next, s.db.Rebind(`SELECT next_update FROM crl_issuers WHERE issuer_key_id = ?`), r.keyID); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, dbErr("crl: reading state", err)
	}
	if next != nil {
		return next.UTC(), nil
	}
	_, n, err := s.crlOf(ctx, r)
	return n, err
}

func (r *responder) setCRL(c *storedCRL) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastCRL == nil || c.Number >= r.lastCRL.Number {
		r.lastCRL = c
	}
}

// signedBy reports whether der is a CRL signed by the CA of cert.
func signedBy(der []byte, cert *x509.Certificate) bool {
	crl, err := x509.ParseRevocationList(der)
	return err == nil && crl.CheckSignatureFrom(cert) == nil
}

// makeCRL signs r's CRL number number: every unexpired certificate of r
// that is revoked, with its reason and time, and every unexpired superseded
// one whose grace period ended, as superseded at the end of its grace
// period. When a root CRL revoked r, every unexpired certificate of r is on
// it (revokedByCA).
func (s *revocationService) makeCRL(ctx context.Context, q sqlx.ExtContext, r *responder, number, seq int64, now time.Time) (*storedCRL, int, error) {
	_, caRevoked := s.arl.revoked(r.keyID)
	var entries []x509.RevocationListEntry
	if err := certs(q).CRLRows(ctx, r.keyID, now, caRevoked, func(row certRow) error {
		serial, ok := new(big.Int).SetString(row.Serial, 16)
		if !ok {
			s.log.WithField("serial", row.Serial).Error("crl: unparsable serial in certificates; skipped")
			return nil
		}
		st := s.stateOf(row, r.keyID, now)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: st.revokedAt, ReasonCode: st.reason})
		return nil
	}); err != nil {
		return nil, 0, wrap("crl", err)
	}
	staleAt, err := certs(q).NextGraceEnd(ctx, r.keyID, now)
	if err != nil {
		return nil, 0, wrap("crl", err)
	}
	this := now.Truncate(time.Second)
	next := this.Add(s.cfg.CRLValidity)
	der, err := r.ca.SignCRL(big.NewInt(number), this, next, entries)
	if err != nil {
		return nil, 0, fmt.Errorf("registry: crl: signing: %w: %v", bare(ErrUnavailable), err)
	}
	return &storedCRL{Number: number, Seq: seq, DER: der, ThisUpdate: &this, NextUpdate: &next, StaleAt: staleAt}, len(entries), nil
}

// CRL returns the current full CRL of the issuing CA (DER, for GET /v1/crl
// as application/pkix-crl) and its nextUpdate. A revocation committed on any
// replica is in the very next CRL returned by any replica, so HTTP caches
// must not keep it long: serve it with a short max-age (≤ 1 s) or an ETag,
// and nextUpdate as Expires. ErrUnavailable without an issuer or when the
// database or token fails.
func (r *Registry) CRL(ctx context.Context) ([]byte, time.Time, error) {
	if r.revocation == nil {
		return nil, time.Time{}, fmt.Errorf("registry: crl: no issuer configured: %w", bare(ErrUnavailable))
	}
	return r.revocation.crl(ctx)
}
