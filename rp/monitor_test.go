package rp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

const monitorTD = "agents.example"

// memHashes is an in-memory translog.HashStore.
type memHashes struct{ h []tlog.Hash }

func (m *memHashes) ReadHashes(_ context.Context, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x >= int64(len(m.h)) {
			return nil, fmt.Errorf("missing hash %d", x)
		}
		out[i] = m.h[x]
	}
	return out, nil
}

func (m *memHashes) WriteHashes(_ context.Context, start int64, hs []tlog.Hash) error {
	if start != int64(len(m.h)) {
		return fmt.Errorf("write at %d, have %d", start, len(m.h))
	}
	m.h = append(m.h, hs...)
	return nil
}

// memLog is a log built with translog and served as an rp.LogSource, with
// faults a test can set.
type memLog struct {
	t       *testing.T
	origin  string
	signer  note.Signer
	leaves  [][]byte
	hashes  *memHashes
	size    int64            // the size served (the checkpoint's)
	tamper  map[int64][]byte // leaves served instead
	page    int64            // leaves per Entries answer
	badCons bool             // flip a bit of the consistency proof
	fetched int64            // leaves served
}

func newMemLog(t *testing.T, signer note.Signer) *memLog {
	return &memLog{t: t, origin: signer.Name(), signer: signer, hashes: &memHashes{}, tamper: map[int64][]byte{}, page: 3}
}

func (l *memLog) append(leaf []byte) {
	l.t.Helper()
	if err := translog.Append(context.Background(), l.hashes, int64(len(l.leaves)), leaf); err != nil {
		l.t.Fatal(err)
	}
	l.leaves = append(l.leaves, leaf)
	l.size = int64(len(l.leaves))
}

func (l *memLog) Checkpoint(ctx context.Context) ([]byte, error) {
	root, err := translog.RootHash(ctx, l.hashes, l.size)
	if err != nil {
		return nil, err
	}
	return translog.SignCheckpoint(translog.Checkpoint{Origin: l.origin, Size: l.size, Hash: root}, l.signer)
}

func (l *memLog) ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	p, err := translog.ConsistencyProof(ctx, l.hashes, oldSize, newSize)
	if err == nil && l.badCons && len(p) > 0 {
		p[0][0] ^= 1
	}
	return p, err
}

func (l *memLog) Entries(_ context.Context, start, end int64) ([][]byte, error) {
	end = min(end, l.size, start+l.page)
	var out [][]byte
	for i := start; i < end; i++ {
		leaf := l.leaves[i]
		if b, ok := l.tamper[i]; ok {
			leaf = b
		}
		out = append(out, leaf)
	}
	l.fetched += int64(len(out))
	return out, nil
}

func fpOf(i int) string { return fmt.Sprintf("%064x", 0x1000+i) }

// leafV2 is a register leaf of fingerprint fpOf(i) carrying indexes.
func leafV2(t *testing.T, i int, indexes ...string) []byte {
	t.Helper()
	e := translog.Entry{Type: translog.EventRegister, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Fingerprint: fpOf(i), IssuerKeyID: "abcd", NameIndexes: indexes}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func leafV1(t *testing.T, i int, agent string) []byte {
	t.Helper()
	e := translog.Entry{Version: translog.EntryVersion1, Type: translog.EventRegister, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC),
		Agent: agent, Serial: "01", Fingerprint: fpOf(i), Actor: "key:test"}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type monitorKeys struct {
	vrf      *rsa.PrivateKey
	logKey   *ecdsa.PrivateKey
	signer   note.Signer
	verifier note.Verifiers
}

func newMonitorKeys(t *testing.T) monitorKeys {
	t.Helper()
	vrf, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := translog.NewNoteSigner(origin, k)
	if err != nil {
		t.Fatal(err)
	}
	v, err := translog.NewNoteVerifier(origin, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return monitorKeys{vrf: vrf, logKey: k, signer: s, verifier: note.VerifierList(v)}
}

func (k monitorKeys) watched(t *testing.T, name string) rp.Watched {
	t.Helper()
	ix, proof, err := translog.VRFProve(k.vrf, monitorTD, name)
	if err != nil {
		t.Fatal(err)
	}
	return rp.Watched{Name: name, Index: hex.EncodeToString(ix[:]), Proof: proof}
}

// roundTrip saves and reloads a state as a monitor does between runs.
func roundTrip(t *testing.T, s rp.MonitorState) rp.MonitorState {
	t.Helper()
	b, err := rp.MarshalState(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := rp.ParseState(b)
	if err != nil {
		t.Fatalf("ParseState(%s): %v", b, err)
	}
	return got
}

func foundIndexes(res *rp.MonitorResult) []int64 {
	var out []int64
	for _, f := range res.Unknown {
		out = append(out, f.Index)
	}
	return out
}

// TestMonitorResumesFromEverySize grows a log leaf by leaf and, from every
// saved state n, scans to every later size m: the findings are exactly the
// unknown watched leaves in [n, m), and only the new leaves are fetched.
func TestMonitorResumesFromEverySize(t *testing.T) {
	ctx := context.Background()
	k := newMonitorKeys(t)
	acme, team, other := k.watched(t, "acme"), k.watched(t, "team.acme"), k.watched(t, "other")
	const n = 24
	l := newMemLog(t, k.signer)
	var want []int64 // unknown leaves for "acme"
	known := map[string]bool{}
	for i := range n {
		switch i % 4 {
		case 0: // acme, known
			l.append(leafV2(t, i, fpOf(900+i), acme.Index))
			known[fpOf(i)] = true
		case 1: // team.acme, unknown
			l.append(leafV2(t, i, fpOf(900+i), team.Index, acme.Index))
			want = append(want, int64(i))
		case 2: // another namespace
			l.append(leafV2(t, i, fpOf(900+i), other.Index))
		case 3: // acme, unknown
			l.append(leafV2(t, i, fpOf(900+i), acme.Index))
			want = append(want, int64(i))
		}
	}
	m := rp.Monitor{Log: l, LogVerifiers: k.verifier, VRFKey: &k.vrf.PublicKey, TrustDomain: monitorTD, Known: known}
	watch := []rp.Watched{acme}
	states := make([]rp.MonitorState, n+1)
	states[0] = rp.MonitorState{}
	for size := int64(1); size <= n; size++ {
		l.size = size
		_, st, err := m.Scan(ctx, states[size-1], watch)
		if err != nil {
			t.Fatalf("scan to %d: %v", size, err)
		}
		states[size] = roundTrip(t, st)
	}
	for from := int64(0); from <= n; from++ {
		for to := from; to <= n; to++ {
			l.size, l.fetched = to, 0
			res, st, err := m.Scan(ctx, states[from], watch)
			if err != nil {
				t.Fatalf("%d→%d: %v", from, to, err)
			}
			var wantHere []int64
			for _, i := range want {
				if i >= from && i < to {
					wantHere = append(wantHere, i)
				}
			}
			if got := foundIndexes(res); !slices.Equal(got, wantHere) {
				t.Errorf("%d→%d: found %v, want %v", from, to, got, wantHere)
			}
			if l.fetched != to-from || res.Scanned != to-from || st.Size != to {
				t.Errorf("%d→%d: fetched %d, scanned %d, state size %d", from, to, l.fetched, res.Scanned, st.Size)
			}
		}
	}
}

func TestMonitorRefusals(t *testing.T) {
	ctx := context.Background()
	k := newMonitorKeys(t)
	acme := k.watched(t, "acme")
	build := func(t *testing.T, n int) *memLog {
		l := newMemLog(t, k.signer)
		for i := range n {
			l.append(leafV2(t, i, acme.Index))
		}
		return l
	}
	monitor := func(l rp.LogSource) rp.Monitor {
		return rp.Monitor{Log: l, LogVerifiers: k.verifier, VRFKey: &k.vrf.PublicKey, TrustDomain: monitorTD}
	}
	// A state after 6 leaves.
	l6 := build(t, 6)
	_, st6, err := monitor(l6).Scan(ctx, rp.MonitorState{}, []rp.Watched{acme})
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSigner, err := translog.NewNoteSigner(origin, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	renamed, err := translog.NewNoteSigner("elsewhere.example/log", k.logKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		log     func(t *testing.T) *memLog
		state   rp.MonitorState
		watched []rp.Watched
		wantErr error  // errors.Is
		want    string // substring
	}{
		{"rollback", func(t *testing.T) *memLog { l := build(t, 9); l.size = 5; return l }, st6, nil, rp.ErrMonitor, "rollback"},
		{"fork at the same size", func(t *testing.T) *memLog {
			l := newMemLog(t, k.signer)
			for i := range 6 {
				l.append(leafV2(t, i+100, acme.Index))
			}
			return l
		}, st6, nil, rp.ErrMonitor, "fork"},
		{"fork at a larger size", func(t *testing.T) *memLog {
			l := newMemLog(t, k.signer)
			for i := range 9 {
				l.append(leafV2(t, i+100, acme.Index))
			}
			return l
		}, st6, nil, rp.ErrMonitor, "does not extend"},
		{"bad consistency proof", func(t *testing.T) *memLog { l := build(t, 9); l.badCons = true; return l }, st6, nil, rp.ErrMonitor, "does not extend"},
		{"a tampered new leaf", func(t *testing.T) *memLog {
			l := build(t, 9)
			l.tamper[7] = leafV2(t, 77, acme.Index)
			return l
		}, st6, nil, rp.ErrMonitor, "hash to root"},
		{"a tampered leaf hidden from a first scan", func(t *testing.T) *memLog {
			l := build(t, 9)
			l.tamper[2] = leafV2(t, 2, fpOf(999)) // another index: the watched leaf hidden
			return l
		}, rp.MonitorState{}, nil, rp.ErrMonitor, "hash to root"},
		{"a non-canonical leaf", func(t *testing.T) *memLog {
			l := newMemLog(t, k.signer)
			l.append(append(leafV2(t, 0, acme.Index), ' '))
			return l
		}, rp.MonitorState{}, nil, rp.ErrMonitor, "leaf 0"},
		{"a version 1 leaf after version 2", func(t *testing.T) *memLog {
			l := newMemLog(t, k.signer)
			l.append(leafV1(t, 0, "a.acme"))
			l.append(leafV2(t, 1, acme.Index))
			l.append(leafV1(t, 2, "b.acme"))
			return l
		}, rp.MonitorState{}, nil, rp.ErrMonitor, "version 1 after"},
		{"signed by another key", func(t *testing.T) *memLog { l := build(t, 9); l.signer = otherSigner; return l }, st6, nil, rp.ErrLogSignature, ""},
		{"another origin", func(t *testing.T) *memLog { l := build(t, 9); l.signer = renamed; l.origin = renamed.Name(); return l }, st6, nil, rp.ErrLogSignature, ""},
		{"a watched index that its proof does not give", func(t *testing.T) *memLog { return build(t, 3) }, rp.MonitorState{},
			[]rp.Watched{{Name: "acme", Index: k.watched(t, "other").Index, Proof: acme.Proof}}, nil, "proof gives index"},
		{"a proof for another name", func(t *testing.T) *memLog { return build(t, 3) }, rp.MonitorState{},
			[]rp.Watched{{Name: "acme", Index: acme.Index, Proof: k.watched(t, "other").Proof}}, translog.ErrVRF, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			watched := tt.watched
			if watched == nil {
				watched = []rp.Watched{acme}
			}
			_, st, err := monitor(tt.log(t)).Scan(ctx, tt.state, watched)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Scan: %v, want %v with %q", err, tt.wantErr, tt.want)
			}
			if st.Size != tt.state.Size || st.Hash != tt.state.Hash {
				t.Errorf("a refused scan moved the state to %d", st.Size)
			}
		})
	}

	t.Run("tampered state files", func(t *testing.T) {
		good, err := rp.MarshalState(st6)
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct{ name, old, new string }{
			{"range hash", st6.Range[0][:8], "00000000"},
			{"root", st6.Hash[:8], "00000000"},
			{"size", `"size": 6`, `"size": 7`},
			{"version", `"v": 1`, `"v": 2`},
			{"unknown field", `"v": 1,`, `"v": 1, "x": 1,`},
		} {
			bad := strings.Replace(string(good), tt.old, tt.new, 1)
			if bad == string(good) {
				t.Fatalf("%s: %q not in the state", tt.name, tt.old)
			}
			if _, err := rp.ParseState([]byte(bad)); err == nil {
				t.Errorf("%s: accepted", tt.name)
			}
		}
	})
}

// TestMonitorVersion1Leaves: leaves from before the upgrade carry the name
// in clear; the monitor matches the watched name and the names under it.
func TestMonitorVersion1Leaves(t *testing.T) {
	k := newMonitorKeys(t)
	acme := k.watched(t, "acme")
	l := newMemLog(t, k.signer)
	for i, agent := range []string{"a.acme", "acme", "notacme", "a.other", "b.team.acme"} {
		l.append(leafV1(t, i, agent))
	}
	l.append(leafV2(t, 5, acme.Index))
	m := rp.Monitor{Log: l, LogVerifiers: k.verifier, VRFKey: &k.vrf.PublicKey, TrustDomain: monitorTD, Known: map[string]bool{fpOf(1): true}}
	res, st, err := m.Scan(context.Background(), rp.MonitorState{}, []rp.Watched{acme})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := foundIndexes(res), []int64{0, 4, 5}; !slices.Equal(got, want) || res.Matched != 4 || st.V2From != 5 {
		t.Errorf("found %v (matched %d, v2 from %d), want %v (matched 4, v2 from 5)", got, res.Matched, st.V2From, want)
	}
}

// TestMonitorReportsIssuancesOnly replays a newcomer's false alarm: after renew and
// revoke, the revoke leaf of the owner's own replaced certificate (no longer in --known)
// was reported as an unknown certificate. Only issuance leaves name certificates the
// owner must have asked for.
func TestMonitorReportsIssuancesOnly(t *testing.T) {
	ctx := context.Background()
	k := newMonitorKeys(t)
	acme := k.watched(t, "acme")
	l := newMemLog(t, k.signer)
	leaf := func(i int, typ translog.EventType, fp string) []byte {
		e := translog.Entry{Type: typ, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Fingerprint: fp, IssuerKeyID: "abcd", NameIndexes: []string{acme.Index}}
		switch typ {
		case translog.EventRotate:
			e.Previous = fpOf(100)
		case translog.EventRevoke:
			e.Reason = "keyCompromise"
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	l.append(leaf(0, translog.EventRotate, fpOf(101)))   // the owner's current certificate
	l.append(leaf(1, translog.EventRevoke, fpOf(100)))   // its replaced predecessor, revoked
	l.append(leaf(2, translog.EventRevoke, fpOf(101)))   // the current one, revoked
	l.append(leaf(3, translog.EventRegister, fpOf(102))) // someone else's issuance
	l.size = 4
	m := rp.Monitor{Log: l, LogVerifiers: k.verifier, VRFKey: &k.vrf.PublicKey, TrustDomain: monitorTD, Known: map[string]bool{fpOf(101): true}}
	res, _, err := m.Scan(ctx, rp.MonitorState{}, []rp.Watched{acme})
	if err != nil {
		t.Fatal(err)
	}
	if got := foundIndexes(res); !slices.Equal(got, []int64{3}) {
		t.Errorf("found %v, want only the unknown issuance at leaf 3", got)
	}
	if res.Matched != 4 {
		t.Errorf("matched %d leaves, want 4 (every leaf under acme is examined)", res.Matched)
	}
}
