package registry

import (
	"fmt"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
)

// The status rule: what a certificate's row means at a given moment. It is
// coded once, in statusAt, and Verify, OCSP and the CRL all apply it:
//
//   - issued: good;
//   - superseded (rotated away): good until its grace period ends
//     (grace_until, set to the rotation time + Config.RotationGrace), then
//     revoked with reason superseded at the grace end; a superseded row
//     without a grace end never verified after its rotation and counts as
//     revoked at its notBefore;
//   - revoked: revoked with its reason and time.
//
// When a root CRL revoked the issuing CA (arl.go), its leaves are revoked
// as well: certState.underRevokedCA, applied per row by the CRL and OCSP;
// Verify refuses such a leaf before it reads any row (ReasonIssuerRevoked).

// certState is a certificate's status at one moment, in the terms of each
// channel: status, reason and revokedAt are what OCSP states and the CRL
// lists; verifyReason is Verify's answer.
type certState struct {
	status    int       // ocsp.Good, ocsp.Revoked or ocsp.Unknown
	reason    int       // RFC 5280 reason code when revoked
	revokedAt time.Time // when revoked
	goodUntil time.Time // superseded inside its grace period: the grace end; else zero
	notAfter  time.Time // the certificate's
	// verifyReason is Verify's Reason* for a certificate that is not good
	// ("" when it is).
	verifyReason string
	// anomaly, when set, says the row held a value the schema and the
	// lifecycle never write (an unknown status or revocation reason); the
	// state is then the safe reading, revoked. Callers log it.
	anomaly string
}

// statusAt is the status rule (see the top of this file): the state at now
// of the certificate whose row is row. It reads Status, RevocationReason,
// RevokedAt, GraceUntil, NotBefore and NotAfter.
func statusAt(row certRow, now time.Time) certState {
	st := certState{notAfter: row.NotAfter.UTC()}
	switch row.Status {
	case CertIssued:
		st.status = ocsp.Good
		return st
	case CertSuperseded:
		if row.GraceUntil != nil && now.Before(*row.GraceUntil) {
			st.status, st.goodUntil = ocsp.Good, row.GraceUntil.UTC()
			return st
		}
		at := row.NotBefore // a superseded row without grace end: never verified after rotation
		if row.GraceUntil != nil {
			at = *row.GraceUntil
		}
		st.status, st.reason, st.revokedAt, st.verifyReason = ocsp.Revoked, ocsp.Superseded, at.UTC(), ReasonSuperseded
		return st
	case CertRevoked:
		st.verifyReason = ReasonRevoked
	default:
		st.verifyReason = ReasonUnknownCertificate
		st.anomaly = fmt.Sprintf("unexpected certificate status %q; treated as revoked", row.Status)
	}
	st.status, st.reason, st.revokedAt = ocsp.Revoked, ocsp.Unspecified, row.NotBefore.UTC()
	if row.RevokedAt != nil {
		st.revokedAt = row.RevokedAt.UTC()
	}
	if row.RevocationReason != nil {
		if code, err := ca.ReasonCode(*row.RevocationReason); err != nil {
			st.anomaly = fmt.Sprintf("unexpected revocation reason %q; published as unspecified", *row.RevocationReason)
		} else {
			st.reason = code
		}
	}
	return st
}

// good reports whether the certificate verifies in state a.
func (a certState) good() bool { return a.status == ocsp.Good }

// same reports whether a response signed for a still states b.
func (a certState) same(b certState) bool {
	return a.status == b.status && a.reason == b.reason && a.revokedAt.Equal(b.revokedAt) && a.goodUntil.Equal(b.goodUntil)
}

func (a certState) flightKey() string {
	return fmt.Sprintf("%d|%d|%d|%d", a.status, a.reason, a.revokedAt.UnixMicro(), a.goodUntil.UnixMicro())
}

// underRevokedCA returns what OCSP and the CRL state about a leaf in state
// a whose issuing CA c was revoked by its root: revoked at the CA's
// revocation time, with reason cACompromise (or the root CRL's own reason
// when it is a benign one such as superseded or cessationOfOperation),
// unless the leaf was revoked earlier for its own reason.
func (a certState) underRevokedCA(c revokedCA) certState {
	if a.status == ocsp.Revoked && !a.revokedAt.After(c.at) {
		return a
	}
	reason := ocsp.CACompromise
	switch c.reason {
	case ocsp.Superseded, ocsp.CessationOfOperation, ocsp.AffiliationChanged, ocsp.PrivilegeWithdrawn:
		reason = c.reason
	}
	return certState{status: ocsp.Revoked, reason: reason, revokedAt: c.at.UTC(), notAfter: a.notAfter, verifyReason: ReasonIssuerRevoked}
}

// stateOf is statusAt as the CRL and the OCSP responder of the issuing CA
// with key id issuer state it: with the root CRL's revocation of that CA
// applied (as of the last sync), and any anomaly logged.
func (s *revocationService) stateOf(row certRow, issuer string, now time.Time) certState {
	st := statusAt(row, now)
	if st.anomaly != "" {
		s.log.WithField("serial", row.Serial).Error(st.anomaly)
	}
	if c, revoked := s.arl.revoked(issuer); revoked {
		st = st.underRevokedCA(c)
	}
	return st
}
