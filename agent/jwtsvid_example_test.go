package agent_test

import (
	"context"
	"log"
	"net/http"

	"github.com/agent-trust-registry/atr/agent"
)

// An agent calls a service that takes JWT-SVIDs: the token is fetched over
// mTLS with the agent's certificate and reused until half its lifetime.
func ExampleSource_JWTSVID() {
	ctx := context.Background()
	bundle, err := agent.LoadBundle("var/ca/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	src, err := agent.NewSource(ctx, agent.Config{Server: "https://127.0.0.1:8443", Bundle: bundle,
		KeyFile: "agent.key", CertFile: "agent.pem"})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	svid, err := src.JWTSVID(ctx, "https://payments.example.org")
	if err != nil {
		log.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://payments.example.org/balance", nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+svid.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
}
