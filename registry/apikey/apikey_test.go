package apikey_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/registry/apikey"
)

const goodKey = "atr_0123456789abcdef_" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestParse(t *testing.T) {
	tests := []struct {
		name, key string
		wantID    string // "" → malformed
	}{
		{"well formed", goodKey, "0123456789abcdef"},
		{"empty", "", ""},
		{"null from a failed jq", "null", ""},
		{"no prefix", strings.TrimPrefix(goodKey, "atr_"), ""},
		{"uppercase", strings.ToUpper(goodKey), ""},
		{"short secret", goodKey[:len(goodKey)-1], ""},
		{"long secret", goodKey + "0", ""},
		{"wrong separator", strings.Replace(goodKey, "f_", "f-", 1), ""},
		{"non-hex id", "atr_0123456789abcdeg_" + goodKey[21:], ""},
		{"inner space", goodKey[:30] + " " + goodKey[31:], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := apikey.Parse(tt.key)
			if tt.wantID == "" {
				if err == nil || !errors.Is(err, apikey.ErrMalformed) {
					t.Fatalf("Parse(%q) = %q, %v; want ErrMalformed", tt.key, id, err)
				}
				if len(tt.key) > 8 && strings.Contains(err.Error(), tt.key) {
					t.Errorf("the error repeats the key: %v", err)
				}
				return
			}
			if err != nil || id != tt.wantID {
				t.Errorf("ParseAPIKey = %q, %v; want %q, nil", id, err, tt.wantID)
			}
		})
	}
}
