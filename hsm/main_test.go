package hsm_test

import (
	"os"
	"testing"

	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }
