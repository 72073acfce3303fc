package registry

import (
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestStatusAt pins the one status rule (status.go) that Verify, OCSP and
// the CRL apply, including the instant a superseded certificate's grace
// period ends.
func TestStatusAt(t *testing.T) {
	nb := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	na := nb.Add(24 * time.Hour)
	grace := nb.Add(2 * time.Hour)
	revokedAt := nb.Add(time.Hour)
	str := func(s string) *string { return &s }
	tm := func(t time.Time) *time.Time { return &t }
	tests := []struct {
		name    string
		row     certRow
		now     time.Time
		want    certState
		anomaly bool
	}{
		{"issued", certRow{Status: CertIssued}, nb, certState{status: ocsp.Good}, false},
		{"superseded inside grace", certRow{Status: CertSuperseded, GraceUntil: tm(grace)}, grace.Add(-time.Microsecond),
			certState{status: ocsp.Good, goodUntil: grace}, false},
		{"superseded at grace end", certRow{Status: CertSuperseded, GraceUntil: tm(grace)}, grace,
			certState{status: ocsp.Revoked, reason: ocsp.Superseded, revokedAt: grace, verifyReason: ReasonSuperseded}, false},
		{"superseded after grace", certRow{Status: CertSuperseded, GraceUntil: tm(grace)}, grace.Add(time.Hour),
			certState{status: ocsp.Revoked, reason: ocsp.Superseded, revokedAt: grace, verifyReason: ReasonSuperseded}, false},
		{"superseded without grace", certRow{Status: CertSuperseded}, nb,
			certState{status: ocsp.Revoked, reason: ocsp.Superseded, revokedAt: nb, verifyReason: ReasonSuperseded}, false},
		{"revoked", certRow{Status: CertRevoked, RevocationReason: str("keyCompromise"), RevokedAt: tm(revokedAt)}, na,
			certState{status: ocsp.Revoked, reason: ocsp.KeyCompromise, revokedAt: revokedAt, verifyReason: ReasonRevoked}, false},
		{"revoked with reason superseded", certRow{Status: CertRevoked, RevocationReason: str("superseded"), RevokedAt: tm(revokedAt)}, na,
			certState{status: ocsp.Revoked, reason: ocsp.Superseded, revokedAt: revokedAt, verifyReason: ReasonRevoked}, false},
		{"revoked without time", certRow{Status: CertRevoked, RevocationReason: str("unspecified")}, na,
			certState{status: ocsp.Revoked, reason: ocsp.Unspecified, revokedAt: nb, verifyReason: ReasonRevoked}, false},
		{"revoked with unknown reason", certRow{Status: CertRevoked, RevocationReason: str("whim"), RevokedAt: tm(revokedAt)}, na,
			certState{status: ocsp.Revoked, reason: ocsp.Unspecified, revokedAt: revokedAt, verifyReason: ReasonRevoked}, true},
		{"unknown status", certRow{Status: "lost"}, nb,
			certState{status: ocsp.Revoked, reason: ocsp.Unspecified, revokedAt: nb, verifyReason: ReasonUnknownCertificate}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.row.NotBefore, tt.row.NotAfter = nb, na
			got := statusAt(tt.row, tt.now)
			if !got.same(tt.want) || got.verifyReason != tt.want.verifyReason || !got.notAfter.Equal(na) || (got.anomaly != "") != tt.anomaly {
				t.Errorf("statusAt(%s) = %+v, want %+v (notAfter %v, anomaly %v)", tt.name, got, tt.want, na, tt.anomaly)
			}
			if got.good() != (tt.want.verifyReason == "") {
				t.Errorf("good() = %v with verifyReason %q", got.good(), got.verifyReason)
			}
		})
	}
}

func TestUnderRevokedCA(t *testing.T) {
	caAt := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	na := caAt.Add(time.Hour)
	tests := []struct {
		name  string
		leaf  certState
		ca    revokedCA
		want  certState
		whyIs string
	}{
		{"good leaf", certState{status: ocsp.Good, notAfter: na}, revokedCA{at: caAt, reason: ocsp.KeyCompromise},
			certState{status: ocsp.Revoked, reason: ocsp.CACompromise, revokedAt: caAt}, ReasonIssuerRevoked},
		{"benign CA reason kept", certState{status: ocsp.Good, notAfter: na}, revokedCA{at: caAt, reason: ocsp.CessationOfOperation},
			certState{status: ocsp.Revoked, reason: ocsp.CessationOfOperation, revokedAt: caAt}, ReasonIssuerRevoked},
		{"leaf revoked earlier keeps its own", certState{status: ocsp.Revoked, reason: ocsp.KeyCompromise, revokedAt: caAt.Add(-time.Hour), verifyReason: ReasonRevoked},
			revokedCA{at: caAt}, certState{status: ocsp.Revoked, reason: ocsp.KeyCompromise, revokedAt: caAt.Add(-time.Hour)}, ReasonRevoked},
		{"leaf revoked later", certState{status: ocsp.Revoked, reason: ocsp.KeyCompromise, revokedAt: caAt.Add(time.Minute), verifyReason: ReasonRevoked},
			revokedCA{at: caAt}, certState{status: ocsp.Revoked, reason: ocsp.CACompromise, revokedAt: caAt}, ReasonIssuerRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.leaf.underRevokedCA(tt.ca)
			if !got.same(tt.want) || got.verifyReason != tt.whyIs {
				t.Errorf("got %+v, want %+v with verifyReason %q", got, tt.want, tt.whyIs)
			}
			if !got.notAfter.Equal(tt.leaf.notAfter) {
				t.Errorf("notAfter %v, want the leaf's %v", got.notAfter, tt.leaf.notAfter)
			}
		})
	}
}
