package faults

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry/translog"
	"golang.org/x/mod/sumdb/tlog"
)

func TestCheckLogEvents(t *testing.T) {
	fp := func(n int) string { return fmt.Sprintf("%064x", n) }
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ix := []string{fp(900), fp(901)}
	reg := func(n int) translog.Entry {
		return translog.Entry{Version: translog.EntryVersion, Type: translog.EventRegister, Time: at, Fingerprint: fp(n), IssuerKeyID: "ab", NameIndexes: ix}
	}
	rot := func(n, prev int) translog.Entry {
		e := reg(n)
		e.Type, e.Previous = translog.EventRotate, fp(prev)
		return e
	}
	rev := func(n int) translog.Entry {
		e := reg(n)
		e.Type, e.Reason = translog.EventRevoke, "keyCompromise"
		return e
	}
	ceremony := translog.Entry{Version: translog.EntryVersion, Type: translog.EventCeremony, Time: at, Fingerprint: fp(77), IssuerKeyID: "ab", Certificate: []byte{1}}
	// a.acme: 1 registered, 2 rotated; b.acme: 3 registered and revoked.
	st := &DBState{Certs: map[string]certRow{
		"s1": {Serial: "s1", Agent: "a.acme", Fingerprint: fp(1), Status: StatusSuperseded},
		"s2": {Serial: "s2", Agent: "a.acme", Fingerprint: fp(2), Status: StatusIssued},
		"s3": {Serial: "s3", Agent: "b.acme", Fingerprint: fp(3), Status: StatusRevoked},
	}}
	agents := []AgentRecord{
		{Name: "a.acme", Certs: []AckedCert{{Serial: "s1", Fingerprint: fp(1)}, {Serial: "s2", Fingerprint: fp(2)}}},
		{Name: "b.acme", Certs: []AckedCert{{Serial: "s3", Fingerprint: fp(3)}}, Revoked: true},
	}
	good := []translog.Entry{ceremony, reg(1), reg(3), rot(2, 1), rev(3)}
	v1 := reg(1)
	v1.Version, v1.NameIndexes, v1.Agent = translog.EntryVersion1, nil, "a.acme"
	apikey := translog.Entry{Version: translog.EntryVersion1, Type: translog.EventAPIKeyCreate, Time: at, KeyID: "k1"}
	swapped := map[string]certRow{}
	for k, v := range st.Certs {
		swapped[k] = v
	}
	swapped["s3"] = certRow{Serial: "s3", Agent: "a.acme", Fingerprint: fp(3), Status: StatusRevoked}

	for _, tt := range []struct {
		name    string
		entries []translog.Entry
		certs   map[string]certRow
		want    []string // substrings of the errors, in any order; none = clean
	}{
		{"clean", good, nil, nil},
		{"issuance missing", []translog.Entry{ceremony, reg(1), rot(2, 1), rev(3)}, nil,
			[]string{"stored but not in the log", "acknowledged certificate s3: 0 issuance entries"}},
		{"issuance duplicated", append(append([]translog.Entry{}, good...), reg(1)), nil,
			[]string{"has 2 issuance entries", "acknowledged certificate s1: 2 issuance entries"}},
		{"unknown certificate issued", append(append([]translog.Entry{}, good...), reg(9)), nil,
			[]string{"no certificate in the registry"}},
		{"revocation missing", good[:4], nil,
			[]string{"status revoked but 0 revoke entries", "acknowledged revocation of b.acme"}},
		{"revocation duplicated", append(append([]translog.Entry{}, good...), rev(3)), nil,
			[]string{"2 revoke entries in the log", "acknowledged revocation of b.acme: 2 revoke entries"}},
		{"revocation of the wrong certificate", []translog.Entry{ceremony, reg(1), reg(3), rot(2, 1), rev(2)}, nil,
			[]string{"status revoked but 0 revoke entries", "status issued but 1 revoke entries", "acknowledged revocation of b.acme"}},
		{"rotation logged as register", []translog.Entry{ceremony, reg(1), reg(3), reg(2), rev(3)}, nil,
			[]string{"type register, want rotate"}},
		{"rotation with the wrong previous", []translog.Entry{ceremony, reg(1), reg(3), rot(2, 3), rev(3)}, nil,
			[]string{"previous " + fp(3)}},
		{"fingerprint belongs to another agent", good, swapped,
			[]string{"acknowledged certificate s3 of b.acme"}},
		{"version 1 agent entry", []translog.Entry{ceremony, v1, reg(3), rot(2, 1), rev(3)}, nil,
			[]string{"version 1 with 0 name indexes"}},
		{"API key event", append(append([]translog.Entry{}, good...), apikey), nil,
			[]string{"apikey_create is not a log event"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := st
			if tt.certs != nil {
				s = &DBState{Certs: tt.certs}
			}
			errs := CheckLogEvents(tt.entries, s, agents)
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			all := strings.Join(got, "\n")
			if len(tt.want) == 0 && len(errs) > 0 {
				t.Fatalf("got errors:\n%s\nwant none", all)
			}
			if len(tt.want) > 0 && len(errs) == 0 {
				t.Fatalf("got no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("errors lack %q:\n%s", w, all)
				}
			}
		})
	}
}

// TestDistinctHeads: a poller's many sightings of one head cost one
// consistency proof, and a fork inside the sightings is found locally.
func TestDistinctHeads(t *testing.T) {
	cp := func(size int64, b byte) translog.Checkpoint {
		return translog.Checkpoint{Size: size, Hash: tlog.Hash{b}}
	}
	tests := []struct {
		name    string
		in      []translog.Checkpoint
		want    []int64
		wantErr string
	}{
		{"empty", nil, nil, ""},
		{"repeats collapse, ordered by size", []translog.Checkpoint{cp(5, 5), cp(3, 3), cp(5, 5), cp(0, 0), cp(3, 3)}, []int64{0, 3, 5}, ""},
		{"fork", []translog.Checkpoint{cp(3, 3), cp(4, 4), cp(3, 9)}, nil, "size 3 with different roots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := distinctHeads(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var sizes []int64
			for _, c := range got {
				sizes = append(sizes, c.Size)
			}
			if !slices.Equal(sizes, tt.want) {
				t.Errorf("sizes %v, want %v", sizes, tt.want)
			}
		})
	}
}
