package rp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// sigLines splits a signed note into its text (with the blank line) and its
// signature lines (each with its newline).
func sigLines(t *testing.T, msg []byte) (string, []string) {
	t.Helper()
	text, sigs, ok := strings.Cut(string(msg), "\n\n")
	if !ok {
		t.Fatalf("not a signed note: %q", msg)
	}
	var lines []string
	for _, l := range strings.SplitAfter(sigs, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return text + "\n\n", lines
}

// lineKeyHash is the key hash of a signature line "— name base64".
func lineKeyHash(t *testing.T, line string) uint32 {
	t.Helper()
	f := strings.Fields(line)
	sig, err := base64.StdEncoding.DecodeString(f[len(f)-1])
	if err != nil || len(sig) < 4 {
		t.Fatalf("signature line %q: %v", line, err)
	}
	return uint32(sig[0])<<24 | uint32(sig[1])<<16 | uint32(sig[2])<<8 | uint32(sig[3])
}

func parseReceipt(t *testing.T, b []byte) translog.Receipt {
	t.Helper()
	r, err := translog.ParseReceipt(b)
	if err != nil {
		t.Fatalf("ParseReceipt: %v", err)
	}
	return r
}

func marshalReceipt(t *testing.T, r translog.Receipt) []byte {
	t.Helper()
	b, err := r.Marshal()
	if err != nil {
		t.Fatalf("Receipt.Marshal: %v", err)
	}
	return b
}

// clone deep-copies the fields the mutations below change.
func clone(r translog.Receipt) translog.Receipt {
	r.Leaf = bytes.Clone(r.Leaf)
	r.Checkpoint = bytes.Clone(r.Checkpoint)
	r.InclusionProof = append([]tlog.Hash(nil), r.InclusionProof...)
	r.Opened.Certificate = bytes.Clone(r.Opened.Certificate)
	proofs := make([][]byte, len(r.Opened.VRFProofs))
	for i, p := range r.Opened.VRFProofs {
		proofs[i] = bytes.Clone(p)
	}
	r.Opened.VRFProofs = proofs
	return r
}

func reasonOf(err error) rp.ReceiptReason {
	var re *rp.ReceiptError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

func TestReceiptVerify(t *testing.T) {
	ctx := context.Background()
	f := registrytest.NewFixture(t)
	owner := f.Owner("acme", "acme")
	admin := f.Admin()
	register := func(a registry.Actor, name string) *registry.Issued {
		t.Helper()
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, a, registry.RegisterRequest{Name: name, CSR: csr})
		if err != nil {
			t.Fatalf("Register(%s): %v", name, err)
		}
		return iss
	}
	first := register(owner, "bot.team.acme")
	csr, _ := f.NewCSR()
	rotated, err := f.Registry.Rotate(ctx, owner, "bot.team.acme", csr)
	if err != nil {
		t.Fatal(err)
	}
	other := register(admin, "other.acme")
	revoked := register(owner, "gone.acme")
	if _, err := f.Registry.Revoke(ctx, owner, "gone.acme", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		register(owner, fmt.Sprintf("filler-%d.acme", i))
	}

	edV, err := translog.NewEd25519NoteVerifier(f.LogOrigin, f.LogKeyEd25519.Public())
	if err != nil {
		t.Fatal(err)
	}
	w := newWitness(t, "witness.test")
	v := rp.ReceiptVerifier{
		Roots: []*x509.Certificate{f.Root}, Intermediates: []*x509.Certificate{f.Intermediate},
		TrustDomain:  registrytest.TrustDomain,
		LogVerifiers: note.VerifierList(f.NoteVerifier, edV),
		VRFKey:       f.VRFKey.Public(),
	}
	now := f.Clock.Now()
	der := func(iss *registry.Issued) []byte { return f.ParseCertificate(iss.CertificatePEM).Raw }

	t.Run("issuance receipts verify", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			iss  *registry.Issued
			want string
		}{
			{"register", first, "bot.team.acme"},
			{"rotate", rotated, "bot.team.acme"},
			{"registered by an admin", other, "other.acme"},
			{"revoked since (a receipt proves logging, not status)", revoked, "gone.acme"},
		} {
			if tt.iss.Receipt == nil {
				t.Fatalf("%s: no receipt", tt.name)
			}
			got, err := v.Verify(der(tt.iss), tt.iss.Receipt, now)
			if err != nil {
				t.Errorf("%s: Verify: %v", tt.name, err)
				continue
			}
			if got.Name != tt.want || got.LeafIndex != tt.iss.LogIndex {
				t.Errorf("%s: got %s at %d, want %s at %d", tt.name, got.Name, got.LeafIndex, tt.want, tt.iss.LogIndex)
			}
		}
	})

	t.Run("a checkpoint of another log origin is refused", func(t *testing.T) {
		// The same key could sign for another origin; the receipt must be this log's
		// (security review of issue 12).
		other := v
		other.Origin = "other.example/log"
		_, err := other.Verify(der(first), first.Receipt, now)
		var re *rp.ReceiptError
		if !errors.As(err, &re) || re.Reason != rp.ReasonLogSignature {
			t.Errorf("Verify with origin %s = %v; want a log_signature refusal", other.Origin, err)
		}
	})

	// The base for the alterations: a fresh receipt of the first certificate
	// (a tree larger than one leaf, so the proof has several hashes),
	// cosigned by the witness, with the Ed25519 log line removed so that
	// each remaining signature line is necessary.
	opened, err := f.Registry.OpenedEntries(ctx, owner, "bot.team.acme")
	if err != nil || len(opened) != 2 {
		t.Fatalf("OpenedEntries: %d, %v", len(opened), err)
	}
	base := parseReceipt(t, opened[0].Receipt)
	if len(base.InclusionProof) < 3 {
		t.Fatalf("inclusion proof of %d hashes; want a larger tree", len(base.InclusionProof))
	}
	text, lines := sigLines(t, base.Checkpoint)
	var kept []string
	for _, l := range lines {
		if lineKeyHash(t, l) == f.NoteVerifier.KeyHash() {
			kept = append(kept, l)
		}
	}
	if len(kept) != 1 || len(lines) != 2 {
		t.Fatalf("checkpoint signature lines %q; want an ECDSA and an Ed25519 one", lines)
	}
	base.Checkpoint = cosign(t, []byte(text+kept[0]), w)
	baseBytes := marshalReceipt(t, base)
	cert := der(first)
	policy := rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: 1}
	wv := v
	wv.Witnesses = policy
	if _, err := wv.Verify(cert, baseBytes, now); err != nil {
		t.Fatalf("cosigned base receipt: %v", err)
	}

	t.Run("accepted variations", func(t *testing.T) {
		for _, tt := range []struct {
			name   string
			v      rp.ReceiptVerifier
			mutate func(r *translog.Receipt)
		}{
			{"witnessed flag is informational", wv, func(r *translog.Receipt) { r.Witnessed = !r.Witnessed }},
			{"threshold 0 needs no cosignature", v, func(r *translog.Receipt) { r.Checkpoint = []byte(text + kept[0]) }},
			{"the Ed25519 log signature alone", v, func(r *translog.Receipt) {
				for _, l := range lines {
					if l != kept[0] {
						r.Checkpoint = []byte(text + l)
					}
				}
			}},
		} {
			r := clone(base)
			tt.mutate(&r)
			if _, err := tt.v.Verify(cert, marshalReceipt(t, r), now); err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
		}
	})

	type alteration struct {
		name   string
		mutate func(r *translog.Receipt)
		want   rp.ReceiptReason // "" = any refusal
	}
	var alts []alteration
	add := func(name string, want rp.ReceiptReason, m func(r *translog.Receipt)) {
		alts = append(alts, alteration{name, m, want})
	}
	for i := range base.Leaf {
		add(fmt.Sprintf("leaf byte %d", i), "", func(r *translog.Receipt) { r.Leaf[i] ^= 1 << (i % 7) })
	}
	add("leaf of another certificate", rp.ReasonOpening, func(r *translog.Receipt) {
		r.Leaf = parseReceipt(t, other.Receipt).Leaf
	})
	add("leaf of the rotation", rp.ReasonOpening, func(r *translog.Receipt) {
		r.Leaf = parseReceipt(t, rotated.Receipt).Leaf
	})
	add("leaf index +1", rp.ReasonInclusion, func(r *translog.Receipt) { r.LeafIndex++; r.Opened.LeafIndex++ })
	for bit := range 4 {
		add(fmt.Sprintf("leaf index bit %d", bit), rp.ReasonInclusion, func(r *translog.Receipt) {
			r.LeafIndex ^= 1 << bit
			r.Opened.LeafIndex = r.LeafIndex
		})
	}
	add("leaf index past the tree", rp.ReasonInclusion, func(r *translog.Receipt) { r.LeafIndex += 1000; r.Opened.LeafIndex += 1000 })
	for h := range base.InclusionProof {
		for i := range len(base.InclusionProof[h]) {
			add(fmt.Sprintf("proof hash %d byte %d", h, i), rp.ReasonInclusion, func(r *translog.Receipt) {
				r.InclusionProof[h][i] ^= 1 << (i % 8)
			})
		}
	}
	add("proof hash dropped", rp.ReasonInclusion, func(r *translog.Receipt) { r.InclusionProof = r.InclusionProof[1:] })
	add("proof hash added", rp.ReasonInclusion, func(r *translog.Receipt) {
		r.InclusionProof = append(r.InclusionProof, r.InclusionProof[0])
	})
	add("proof hashes swapped", rp.ReasonInclusion, func(r *translog.Receipt) {
		r.InclusionProof[0], r.InclusionProof[1] = r.InclusionProof[1], r.InclusionProof[0]
	})
	add("proof emptied", rp.ReasonInclusion, func(r *translog.Receipt) { r.InclusionProof = nil })
	for i := range len(text) - 1 { // every byte of the checkpoint text and the blank line's first newline
		add(fmt.Sprintf("checkpoint text byte %d", i), "", func(r *translog.Receipt) { r.Checkpoint[i] ^= 1 << (i % 7) })
	}
	sigStart := len(text)
	for off := sigStart; off < len(base.Checkpoint); off++ {
		c := base.Checkpoint[off]
		if c == '\n' || c == ' ' {
			continue
		}
		add(fmt.Sprintf("checkpoint signature byte %d (%q)", off, c), "", func(r *translog.Receipt) {
			r.Checkpoint[off] = flipBase64(c)
		})
	}
	add("log signature line removed", rp.ReasonLogSignature, func(r *translog.Receipt) {
		r.Checkpoint = []byte(strings.Replace(string(r.Checkpoint), kept[0], "", 1))
	})
	add("cosignature line removed", rp.ReasonWitnessPolicy, func(r *translog.Receipt) { r.Checkpoint = []byte(text + kept[0]) })
	add("checkpoint of another tree size", rp.ReasonInclusion, func(r *translog.Receipt) {
		r.Checkpoint = cosign(t, parseReceipt(t, first.Receipt).Checkpoint, w)
	})
	add("opened name: the namespace", rp.ReasonOpening, func(r *translog.Receipt) { r.Opened.Name = "team.acme" })
	add("opened name: another agent", rp.ReasonOpening, func(r *translog.Receipt) { r.Opened.Name = "other.acme" })
	add("opened name: case", rp.ReasonOpening, func(r *translog.Receipt) { r.Opened.Name = "Bot.team.acme" })
	for i := 0; i < len(base.Opened.Certificate); i += 7 {
		add(fmt.Sprintf("opened certificate byte %d", i), rp.ReasonOtherCertificate, func(r *translog.Receipt) {
			r.Opened.Certificate[i] ^= 1 << (i % 8)
		})
	}
	add("opened certificate of the rotation", rp.ReasonOtherCertificate, func(r *translog.Receipt) { r.Opened.Certificate = der(rotated) })
	for i := range base.Opened.VRFProofs[0] {
		add(fmt.Sprintf("VRF proof byte %d", i), rp.ReasonOpening, func(r *translog.Receipt) {
			r.Opened.VRFProofs[0][i] ^= 1 << (i % 8)
		})
	}
	add("VRF proof truncated", rp.ReasonOpening, func(r *translog.Receipt) { r.Opened.VRFProofs[0] = r.Opened.VRFProofs[0][1:] })
	add("VRF proof of another name", rp.ReasonOpening, func(r *translog.Receipt) {
		r.Opened.VRFProofs[0] = parseReceipt(t, other.Receipt).Opened.VRFProofs[0]
	})
	add("VRF proofs beyond the suffixes", rp.ReasonOpening, func(r *translog.Receipt) {
		r.Opened.VRFProofs = append(r.Opened.VRFProofs, r.Opened.VRFProofs[0], r.Opened.VRFProofs[0], r.Opened.VRFProofs[0])
	})

	t.Run("every alteration is refused", func(t *testing.T) {
		t.Logf("%d alterations", len(alts))
		for _, tt := range alts {
			r := clone(base)
			tt.mutate(&r)
			b, err := r.Marshal()
			if err != nil {
				t.Fatalf("%s: the altered receipt does not encode: %v", tt.name, err)
			}
			_, err = wv.Verify(cert, b, now)
			switch {
			case err == nil:
				t.Errorf("%s: accepted", tt.name)
			case !errors.Is(err, rp.ErrReceipt):
				t.Errorf("%s: error %v does not wrap ErrReceipt", tt.name, err)
			case tt.want != "" && reasonOf(err) != tt.want:
				t.Errorf("%s: reason %q (%v), want %q", tt.name, reasonOf(err), err, tt.want)
			}
		}
	})

	t.Run("raw JSON alterations", func(t *testing.T) {
		for _, tt := range []struct{ name, old, new string }{
			{"format", `"atr-receipt/v1"`, `"atr-receipt/v2"`},
			{"leaf_index out of step with the opening", fmt.Sprintf(`"leaf_index":%d,"leaf"`, base.LeafIndex), fmt.Sprintf(`"leaf_index":%d,"leaf"`, base.LeafIndex+1)},
			{"unknown field", `{"format"`, `{"extra":1,"format"`},
			{"whitespace", `,"leaf"`, `, "leaf"`},
			{"opened version", `{"v":1,`, `{"v":2,`},
		} {
			b := bytes.Replace(baseBytes, []byte(tt.old), []byte(tt.new), 1)
			if bytes.Equal(b, baseBytes) {
				t.Fatalf("%s: %s not found in the receipt", tt.name, tt.old)
			}
			if _, err := wv.Verify(cert, b, now); reasonOf(err) != rp.ReasonMalformed {
				t.Errorf("%s: %v, want reason %q", tt.name, err, rp.ReasonMalformed)
			}
		}
	})

	t.Run("context refusals", func(t *testing.T) {
		revokeLeaf, err := f.Registry.OpenedEntries(ctx, owner, "gone.acme")
		if err != nil || len(revokeLeaf) != 2 {
			t.Fatalf("OpenedEntries(gone.acme): %d, %v", len(revokeLeaf), err)
		}
		wrongTD := v
		wrongTD.TrustDomain = "other.atr.test"
		noInter := v
		noInter.Intermediates = nil
		otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl, err := ca.RootTemplate("Another Root", 0, now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		otherRoot, err := ca.CreateCertificate(tmpl, tmpl, otherKey.Public(), otherKey)
		if err != nil {
			t.Fatal(err)
		}
		noRoots := v
		noRoots.Roots = []*x509.Certificate{otherRoot}
		edOnly := v
		edOnly.LogVerifiers = note.VerifierList(edV)
		for _, tt := range []struct {
			name    string
			v       rp.ReceiptVerifier
			cert    []byte
			receipt []byte
			now     time.Time
			want    rp.ReceiptReason
		}{
			{"a receipt for another certificate", wv, der(other), baseBytes, now, rp.ReasonOtherCertificate},
			{"the receipt of the replaced certificate", v, der(rotated), first.Receipt, now, rp.ReasonOtherCertificate},
			{"a revoke leaf's receipt", v, der(revoked), revokeLeaf[1].Receipt, now, rp.ReasonLeaf},
			{"after the certificate expired", wv, cert, baseBytes, now.Add(31 * 24 * time.Hour), rp.ReasonChain},
			{"another trust domain", wrongTD, cert, baseBytes, now, rp.ReasonChain},
			{"the issuing CA unknown", noInter, cert, baseBytes, now, rp.ReasonChain},
			{"an untrusted root", noRoots, cert, baseBytes, now, rp.ReasonChain},
			{"only a log key that did not sign", edOnly, cert, marshalReceipt(t, base), now, rp.ReasonLogSignature},
			{"empty", v, cert, nil, now, rp.ReasonMalformed},
		} {
			_, err := tt.v.Verify(tt.cert, tt.receipt, tt.now)
			if got := reasonOf(err); got != tt.want {
				t.Errorf("%s: reason %q (%v), want %q", tt.name, got, err, tt.want)
			}
		}
	})

	t.Run("unusable verifier", func(t *testing.T) {
		bad := wv
		bad.Witnesses.Threshold = 2
		if _, err := bad.Verify(cert, baseBytes, now); err == nil || errors.Is(err, rp.ErrReceipt) {
			t.Errorf("threshold above the keys: %v, want a configuration error", err)
		}
		if _, err := (rp.ReceiptVerifier{}).Verify(cert, baseBytes, now); err == nil || errors.Is(err, rp.ErrReceipt) {
			t.Errorf("zero verifier: %v, want a configuration error", err)
		}
	})
}

// flipBase64 returns another base64 alphabet character than c.
// flipBase64 replaces a base64 character by the one whose 6-bit value
// differs in its top bit, which every character of a base64 string carries
// into the decoded bytes (the low bits of the last character may be
// padding, which decoders ignore: flipping those changed nothing and the
// alteration was wrongly "accepted" about one run in ten). Other bytes
// become 'A'.
func flipBase64(c byte) byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	if i := strings.IndexByte(alphabet, c); i >= 0 {
		return alphabet[i^32]
	}
	return 'A'
}
