package witness_test

import (
	"os"
	"testing"

	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// TestMain sets SoftHSM2 up once for this test binary (see hsmtest).
func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }
