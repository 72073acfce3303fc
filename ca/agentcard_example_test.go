package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/agent-trust-registry/atr/ca"
)

// A relying party checks a card signed by ATR: the key comes from ATR's
// JWKS (GET /.well-known/jwks.json) by the signature's kid. Here the card
// key is a software key; in ATR it is on the token.
func ExampleVerifyAgentCard() {
	cardKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	card, err := ca.ParseAgentCard([]byte(`{"name":"billing-bot.acme",
		"supportedInterfaces":[{"url":"https://agents.acme.example/a2a/billing","protocolBinding":"JSONRPC"}]}`))
	if err != nil {
		panic(err)
	}
	sig, err := ca.SignAgentCard(cardKey, card, map[string]any{"atr_log_index": 42})
	if err != nil {
		panic(err)
	}
	signed, _ := card.JSON(sig)

	kid, _ := ca.JWKThumbprint(cardKey.Public()) // the JWKS entry's kid
	jwks := func(k string) (crypto.PublicKey, error) {
		if k != kid {
			return nil, errors.New("not in the JWKS")
		}
		return cardKey.Public(), nil
	}
	c, s, err := ca.VerifyAgentCard(signed, jwks)
	fmt.Println(c.Name, c.InterfaceURLs, s.Header["atr_log_index"], err)
	// Output: billing-bot.acme [https://agents.acme.example/a2a/billing] 42 <nil>
}
