package registry_test

import (
	"context"
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestAuditCursorRange replays issue 11 item 4: on PostgreSQL an audit cursor of 2^31 or
// more reached SQL as an int4 parameter and failed with "integer out of range" (500).
// Every well-formed cursor in int64 range is served; anything else is ErrInvalid.
func TestAuditCursorRange(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		register(t, f, f.Owner("acme", "acme"), "bot.acme")
		cur := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
		tests := []struct {
			name, cursor string
			wantErr      error
		}{
			{"2^31", cur(strconv.FormatInt(1<<31, 10)), nil},
			{"2^32+1", cur(strconv.FormatInt(1<<32+1, 10)), nil},
			{"max int64", cur(strconv.FormatInt(math.MaxInt64, 10)), nil},
			{"past int64", cur("9223372036854775808"), registry.ErrInvalid},
			{"zero", cur("0"), registry.ErrInvalid},
			{"negative", cur("-5"), registry.ErrInvalid},
			{"not base64", "%%%", registry.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				evs, _, err := f.Registry.ListAudit(ctx, f.Admin(), tt.cursor, 10)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ListAudit(cursor %s): err %v, want %v", tt.name, err, tt.wantErr)
				}
				if tt.wantErr == nil && len(evs) == 0 {
					t.Errorf("ListAudit(cursor %s): no events, want the events below the cursor", tt.name)
				}
			})
		}
	})
}
