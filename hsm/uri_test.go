package hsm

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want URI
	}{
		{"pkcs11:token=atr-issuing;object=issuing-2026;id=%01?pin-source=/path",
			URI{Token: "atr-issuing", Object: "issuing-2026", ID: []byte{1}, PinSource: "/path"}},
		{"pkcs11:object=issuing-2026", URI{Object: "issuing-2026"}},
		{"PKCS11:object=a", URI{Object: "a"}},
		{"pkcs11:id=%DE%ad%00", URI{ID: []byte{0xde, 0xad, 0}}},
		{"pkcs11:id=ab", URI{ID: []byte("ab")}},
		{"pkcs11:serial=6f4bd045c923546e;object=k;type=private", URI{Serial: "6f4bd045c923546e", Object: "k"}},
		{"pkcs11:object=my%20key%3Bwith%3Fodd%2Fchars", URI{Object: "my key;with?odd/chars"}},
		{"pkcs11:object=caf%C3%A9", URI{Object: "café"}},
		{"pkcs11:object=a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin",
			URI{Object: "a", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PinSource: "file:/run/pin"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURI(tt.in)
			if err != nil {
				t.Fatalf("ParseURI(%q) error: %v", tt.in, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("ParseURI(%q) = %#v; want %#v", tt.in, got, tt.want)
			}
			again, err := ParseURI(got.String())
			if err != nil || !again.Equal(got) {
				t.Errorf("ParseURI(String() = %q) = %#v, %v; want %#v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseURIRejects(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{"", "must start with"},
		{"pkcs12:object=a", "must start with"},
		{"object=a", "must start with"},
		{"pkcs11:", "names neither object nor id"},
		{"pkcs11:token=atr-issuing", "names neither object nor id"},
		{"pkcs11:object=", "is empty"},
		{"pkcs11:object", "has no value"},
		{"pkcs11:object=a;object=b", "duplicate"},
		{"pkcs11:object=a;id=%01;id=%02", "duplicate"},
		{"pkcs11:object=a?pin-source=/a&pin-source=/b", "duplicate"},
		{"pkcs11:object=a;pin-source=x", "belongs in the query"},
		{"pkcs11:object=a?pin-value=1234", "pin-value is not accepted"},
		{"pkcs11:object=a;slot-id=0", "never by slot"},
		{"pkcs11:object=a;slot-description=x", "never by slot"},
		{"pkcs11:object=a;manufacturer=SoftHSM", "unsupported path attribute"},
		{"pkcs11:object=a;x-vendor=1", "unsupported path attribute"},
		{"pkcs11:object=a?x-vendor=1", "unsupported query attribute"},
		{"pkcs11:object=a?module-name=softhsm2", "module-name is not supported"},
		{"pkcs11:token=a;serial=b;object=c", "conflict"},
		{"pkcs11:object=a;type=cert", "type=private"},
		{"pkcs11:object=a;type=public", "type=private"},
		{"pkcs11:object=a%2", "truncated"},
		{"pkcs11:object=a%", "truncated"},
		{"pkcs11:object=a%zz", "invalid percent-encoding"},
		{"pkcs11:object=a b", "must be percent-encoded"},
		{"pkcs11:object=a/b", "must be percent-encoded"},
		{"pkcs11:object=%FF", "not valid UTF-8"},
		{"pkcs11:object=a%00", "control characters"},
		{"pkcs11:object=a%0Ab", "control characters"},
		{"pkcs11:object=a#frag", "fragments"},
		{"pkcs11:object=a?", "empty query"},
		{"pkcs11:Object=a", "invalid attribute name"},
		{"pkcs11:=a", "empty attribute name"},
		{"pkcs11:object=a;;id=%01", "has no value"},
		{"pkcs11:object=" + strings.Repeat("a", 5000), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURI(tt.in)
			if err == nil {
				t.Fatalf("ParseURI(%q) = %#v; want error containing %q", tt.in, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseURI(%q) error = %q; want it to contain %q", tt.in, err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "hsm: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestURIString(t *testing.T) {
	tests := []struct {
		u    URI
		want string
	}{
		{URI{Token: "atr-issuing", Object: "issuing-2026", ID: []byte{1}, PinSource: "/run/secrets/pin"},
			"pkcs11:token=atr-issuing;object=issuing-2026;id=%01?pin-source=/run/secrets/pin"},
		{URI{Object: "a b;c"}, "pkcs11:object=a%20b%3Bc"},
		{URI{Serial: "12ab", ID: []byte{0xff, 0x00}}, "pkcs11:serial=12ab;id=%FF%00"},
		{URI{Object: "k", ModulePath: "/m.so", PinSource: "/p&q"}, "pkcs11:object=k?pin-source=/p%26q&module-path=/m.so"},
	}
	for _, tt := range tests {
		if got := tt.u.String(); got != tt.want {
			t.Errorf("%#v.String() = %q; want %q", tt.u, got, tt.want)
		}
	}
}

// FuzzParseURI checks that ParseURI never panics and that whatever it
// accepts prints to a canonical string it reads back to the same URI.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=atr-issuing;object=issuing-2026;id=%01?pin-source=/path",
		"pkcs11:object=a%20b",
		"pkcs11:serial=1;id=%00%FF",
		"pkcs11:object=a;object=b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		if u.Object == "" && len(u.ID) == 0 {
			t.Fatalf("ParseURI(%q) accepted a URI naming no key", s)
		}
		if u.Token != "" && u.Serial != "" {
			t.Fatalf("ParseURI(%q) accepted token and serial", s)
		}
		out := u.String()
		v, err := ParseURI(out)
		if err != nil {
			t.Fatalf("ParseURI(String() = %q) failed: %v (input %q)", out, err, s)
		}
		if !v.Equal(u) || !bytes.Equal(v.ID, u.ID) {
			t.Fatalf("round trip of %q: %#v != %#v", s, v, u)
		}
		if v.String() != out {
			t.Fatalf("String() not canonical: %q then %q", out, v.String())
		}
	})
}
