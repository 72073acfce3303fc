package translog

import (
	"os"
	"testing"

	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// TestMain sets SoftHSM2 up once for this test binary (see hsmtest): the
// VRF tests prove with an RSA key on a real token. Only tests import hsm;
// the package itself stays stdlib + x/mod.
func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }
