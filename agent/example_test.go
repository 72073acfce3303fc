package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
)

// An agent registered with `atr agent register` serves mutual TLS to other
// agents and calls them; its certificate renews itself in the background
// (and in its files), and no connection is dropped when it does. This is the
// whole program (TestExampleIsShort keeps it under 40 lines).
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
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
	srv := &http.Server{Addr: ":9443", TLSConfig: src.ServerTLSConfig(agent.AuthorizeNames("ledger.acme")),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello,", r.TLS.PeerCertificates[0].URIs[0])
		})}
	go srv.ListenAndServeTLS("", "") // certificates come from src
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: src.ClientTLSConfig(agent.AuthorizeNames("ledger.acme"))}}
	resp, err := hc.Get("https://ledger.internal:9443/balance")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	<-ctx.Done()
}

// An agent without files: the key is made in memory, registered with the
// owner's API key, and renewed in memory only.
func ExampleRegister() {
	ctx := context.Background()
	bundle, err := agent.LoadBundle("var/ca/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	owner, err := client.New("https://127.0.0.1:8443", client.WithRootCAs(agent.RootPool(bundle)), client.WithAPIKey(os.Getenv("ATR_API_KEY")))
	if err != nil {
		log.Fatal(err)
	}
	key, err := agent.GenerateKey(agent.KeyP256)
	if err != nil {
		log.Fatal(err)
	}
	issued, err := agent.Register(ctx, owner, key, client.RegisterRequest{Name: "billing-bot.acme"})
	if err != nil {
		log.Fatal(err)
	}
	src, err := agent.NewSource(ctx, agent.Config{Server: "https://127.0.0.1:8443", Bundle: bundle, Identity: issued.Identity()})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	fmt.Println("serving as", src.Name(), "until", src.Certificate().NotAfter)
}

// The bare tls.Config hooks, for a configuration of one's own: the server
// presents the current certificate, and crypto/tls checks that clients chain
// to the ATR roots (the agent name is then the application's to check, or
// use ServerTLSConfig, which checks both).
func ExampleSource_GetCertificate() {
	src, err := agent.NewSource(context.Background(), agent.Config{Server: "https://atr.example.org:8443",
		KeyFile: "agent.key", CertFile: "agent.pem"})
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: src.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      src.Roots(), // the ATR roots; agents send their intermediates
	}
	ln, err := tls.Listen("tcp", ":9443", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
}

// Renewing files in place, as `atr agent renew --watch` does, reloading a
// server that reads them after each renewal.
func ExampleRenewer() {
	bundle, err := agent.LoadBundle("var/ca/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	r := &agent.Renewer{
		KeyFile: "agent.key", CertFile: "agent.pem",
		Dial: agent.ClientDialer("https://127.0.0.1:8443", client.WithRootCAs(agent.RootPool(bundle))),
		Hooks: []func(context.Context, *x509.Certificate) error{func(_ context.Context, leaf *x509.Certificate) error {
			log.Printf("renewed: serial %x valid until %s; reloading", leaf.SerialNumber, leaf.NotAfter)
			return nil
		}},
	}
	if err := r.Watch(context.Background()); err != nil {
		log.Fatal(err) // refused for good (revoked, superseded) or expired
	}
}
