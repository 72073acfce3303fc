package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/witness"
)

// Config is the configuration shared by every atr command that touches the
// token, the database or the network. Each field has a command-line flag and
// an ATR_* environment twin; a flag given on the command line wins over the
// environment, which wins over the default. Secrets (the token PINs) are read
// only from a file or from the environment, never from the command line.
//
// Fields marked "derived" are filled from other fields by Complete when they
// are left empty.
type Config struct {
	// DataDir holds the development layout: softhsm2.conf, tokens/, pin,
	// admin.apikey, ca/*.pem, ceremonies/ and the SQLite database.
	// Flag --data-dir, env ATR_DATA_DIR, default ./var.
	DataDir string

	// Listen is the host:port the server listens on and healthcheck calls.
	// Flag --listen, env ATR_LISTEN, default 127.0.0.1:8443.
	Listen string

	// DatabaseURL selects the database: "sqlite:<path>" (or a bare path) for
	// the embedded default, "postgres://…" for PostgreSQL.
	// Flag --database-url, env ATR_DATABASE_URL, derived default
	// sqlite:<DataDir>/atr.db.
	DatabaseURL string

	// TrustDomain is the SPIFFE trust domain of agent identities
	// (spiffe://<TrustDomain>/agent/<name>). Flag --trust-domain, env
	// ATR_TRUST_DOMAIN, default atr.local.
	TrustDomain string

	// PKCS11Module is the PKCS#11 module (.so) to load.
	// Flag --pkcs11-module, env ATR_PKCS11_MODULE, default
	// /usr/lib/softhsm/libsofthsm2.so.
	PKCS11Module string

	// PKCS11Token is the label of the online (issuing) token, the only token
	// the server logs into. Flag --pkcs11-token, env ATR_PKCS11_TOKEN,
	// default atr-issuing.
	PKCS11Token string

	// PKCS11PINFile is a file holding the issuing token's user PIN.
	// Flag --pkcs11-pin-file, env ATR_PKCS11_PIN_FILE. When neither it nor
	// ATR_PKCS11_PIN is set, <DataDir>/pin is used (development layout).
	PKCS11PINFile string

	// PKCS11PIN is the issuing token's user PIN from env ATR_PKCS11_PIN
	// (there is deliberately no flag). The file wins when both are set.
	PKCS11PIN string

	// RootToken is the label of the offline root token, used only by
	// ceremonies. Flag --root-token, env ATR_PKCS11_ROOT_TOKEN, default
	// atr-root.
	RootToken string

	// RootPINFile is a file holding the root token's user PIN.
	// Flag --root-pin-file, env ATR_PKCS11_ROOT_PIN_FILE; when neither it nor
	// ATR_PKCS11_ROOT_PIN is set, the issuing token's PIN source is used.
	RootPINFile string

	// RootPIN is the root token's user PIN from env ATR_PKCS11_ROOT_PIN.
	RootPIN string

	// IssuingKey is the RFC 7512 pkcs11: URI of the issuing key. Flag
	// --issuing-key, env ATR_ISSUING_KEY; default: the newest issuing CA
	// certificate on the token that has a matching private key.
	IssuingKey string

	// LogKey is the pkcs11: URI of the transparency-log signing key. Flag
	// --log-key, env ATR_LOG_KEY, derived default
	// pkcs11:token=<PKCS11Token>;object=atr-log.
	LogKey string

	// LogKeyEd25519 is the pkcs11: URI of the log's Ed25519 key, which
	// signs every checkpoint after LogKey, for witnesses (they verify
	// Ed25519 only). Flag --log-key-ed25519, env ATR_LOG_KEY_ED25519,
	// derived default pkcs11:token=<PKCS11Token>;object=atr-log-ed25519.
	// Made by `atr ceremony log-key-ed25519`. Required when Witnesses are
	// configured or the URI is given explicitly; otherwise a missing key
	// leaves checkpoints with the ECDSA signature only (with a warning).
	LogKeyEd25519 string

	// Witnesses are the C2SP tlog-witness witnesses each new checkpoint is
	// submitted to, each "name=URL=vkey" (name: a label; URL: the witness's
	// submission prefix, http(s) without a query; vkey: its cosigner
	// verifier key). Flag --witness, env ATR_WITNESSES, comma-separated.
	Witnesses []string

	// WitnessTimeout bounds each request to a witness (Go duration, 1s to
	// 5m; zero: 10s). Flag --witness-timeout, env ATR_WITNESS_TIMEOUT.
	WitnessTimeout time.Duration

	// VRFKey is the pkcs11: URI of the name-index VRF key (RSA ≥ 2048
	// bits, docs/transparency.md). Flag --vrf-key, env ATR_VRF_KEY, derived
	// default pkcs11:token=<PKCS11Token>;object=atr-vrf.
	VRFKey string

	// JWTKey is the pkcs11: URI of the key that signs JWT-SVIDs (ECDSA
	// P-256, `atr ceremony jwt-key`). Flag --jwt-key, env ATR_JWT_KEY,
	// derived default pkcs11:token=<PKCS11Token>;object=atr-jwt. When the
	// default key is missing the server starts without JWT-SVIDs (with a
	// warning); a key named explicitly must exist.
	JWTKey string

	// JWTPreviousKeys are pkcs11: URIs of earlier JWT-SVID keys, still
	// published (JWKS, SPIFFE bundle) but no longer signing: keep one listed
	// for at least the longest JWT-SVID lifetime after a rotation.
	// Flag --jwt-previous-keys, env ATR_JWT_PREVIOUS_KEYS, comma-separated.
	JWTPreviousKeys []string

	// CardKey is the pkcs11: URI of the key that signs A2A agent cards
	// (ECDSA P-256, `atr ceremony card-key`). Flag --card-key, env
	// ATR_CARD_KEY, derived default pkcs11:token=<PKCS11Token>;object=atr-card;
	// missing like JWTKey.
	CardKey string

	// PublicURL is the base URL relying parties use to reach this registry;
	// the CRL distribution point and OCSP URL in certificates point under it.
	// Flag --public-url, env ATR_PUBLIC_URL, derived default
	// https://<Listen> (http:// with InsecureHTTP).
	PublicURL string

	// HTTPListen is the address of the plain-http distribution listener,
	// which serves only the CRL, OCSP and the CA bundle (RFC 5280 §4.2.1.13
	// and RFC 5019 practice: relying parties fetch them over http). When set,
	// new certificates name HTTPPublicURL in their CRL distribution point and
	// OCSP AIA. Flag --http-listen, env ATR_HTTP_LISTEN, default empty (off).
	HTTPListen string

	// HTTPPublicURL is the http base URL named in certificates for the CRL and
	// OCSP when HTTPListen is set. Flag --http-public-url, env
	// ATR_HTTP_PUBLIC_URL, derived default http://<HTTPListen>.
	HTTPPublicURL string

	// DebugListen is the loopback host:port of the debug listener, which
	// serves Go's runtime profiles (net/http/pprof) over plain http without
	// authentication, for performance work on a running server
	// (docs/performance.md). Flag --debug-listen, env ATR_DEBUG_LISTEN,
	// default off. Validate refuses an address that is not loopback.
	DebugListen string

	// InsecureHTTP serves plain HTTP, for deployments behind a
	// TLS-terminating proxy only. Flag --insecure-http, env
	// ATR_INSECURE_HTTP, default false.
	InsecureHTTP bool

	// TLSCert and TLSKey are an operator-supplied server certificate chain
	// and key (PEM files, reloaded when they change). When empty the server
	// issues its own certificate from the intermediate at start-up and renews
	// it before expiry. Flags --tls-cert/--tls-key, env ATR_TLS_CERT/ATR_TLS_KEY.
	TLSCert, TLSKey string

	// TLSNames are extra DNS names or IP addresses for the self-issued
	// server certificate (comma-separated). Flag --tls-names, env
	// ATR_TLS_NAMES.
	TLSNames []string

	// RedisURL is the shared rate-limit store for several replicas
	// (redis://…). Env ATR_REDIS_URL only (it may carry a password); empty
	// means in-process limits (one replica).
	RedisURL string

	// TrustedProxies are the CIDRs of reverse proxies whose X-Forwarded-For
	// header is believed (comma-separated; a bare address is a /32 or /128;
	// Forwarded is ignored; api.ParseTrustedProxies reads them). Flag
	// --trusted-proxies, env ATR_TRUSTED_PROXIES; default none.
	TrustedProxies []string

	// CORSOrigins are the exact origins allowed to make cross-origin requests
	// (comma-separated; "*" is refused). Flag --cors-origins, env
	// ATR_CORS_ORIGINS; default none.
	CORSOrigins []string

	// LogLevel is the logrus level (debug, info, warn, error). Flag
	// --log-level, env ATR_LOG_LEVEL, default info.
	LogLevel string

	// LeafLifetime is the validity of agent certificates (Go duration, 1m to
	// 720h; zero: 24h). Flag --leaf-lifetime, env ATR_LEAF_LIFETIME.
	LeafLifetime time.Duration

	// RotationGrace is how long a superseded certificate keeps verifying
	// after a rotation (zero: 5m). Flag --rotation-grace, env
	// ATR_ROTATION_GRACE.
	RotationGrace time.Duration

	// PendingTimeout is how old a pending issuance must be before a replica
	// reconciles it (longer than any signature takes). Flag
	// --pending-timeout, env ATR_PENDING_TIMEOUT (zero: 30s).
	PendingTimeout time.Duration

	// RateLimits raise or lower individual rate limits, as comma-separated
	// CLASS=RATE/PERIOD[:BURST] items (classes per-ip, public, per-key, list,
	// rotate, revoke, card, register, auth-failure), e.g. "register=600/h:100".
	// Limits cannot be switched off and cannot exceed 100× their default.
	// Flag --rate-limits, env ATR_RATE_LIMITS; default: the built-in limits.
	// The api package parses (api.ParseRateLimits) and judges them.
	RateLimits []string
}

// Defaults used by DefaultConfig; documented on the fields above.
const (
	defaultDataDir      = "./var"
	defaultListen       = "127.0.0.1:8443"
	defaultTrustDomain  = "atr.local"
	defaultModule       = "/usr/lib/softhsm/libsofthsm2.so"
	defaultToken        = "atr-issuing"
	defaultRootToken    = "atr-root"
	defaultLogKeyLabel  = "atr-log"
	defaultVRFKeyLabel  = "atr-vrf"
	defaultJWTKeyLabel  = "atr-jwt"
	defaultCardKeyLabel = "atr-card"

	// defaultLogEd25519Label is the label of the log's Ed25519 key.
	defaultLogEd25519Label = "atr-log-ed25519"
)

// DefaultConfig returns the configuration with every default applied and the
// derived fields left empty.
func DefaultConfig() Config {
	return Config{
		DataDir:      defaultDataDir,
		Listen:       defaultListen,
		TrustDomain:  defaultTrustDomain,
		PKCS11Module: defaultModule,
		PKCS11Token:  defaultToken,
		RootToken:    defaultRootToken,
		LogLevel:     "info",
	}
}

// option groups: each subcommand registers only the options it uses.
type optGroup int

const (
	optCommon   optGroup = 1 << iota // data dir, log level
	optToken                         // issuing token
	optRoot                          // root token (ceremonies)
	optDatabase                      // database URL
	optServe                         // listen, trust domain, keys, TLS, public URL
	optListen                        // listen + insecure-http only (healthcheck)
	optTrust                         // trust domain only (ceremonies)
)

// option describes one configuration field: its flag, environment twin and
// where it lives in Config.
type option struct {
	group  optGroup
	flag   string
	env    string
	usage  string
	str    func(c *Config) *string
	boolP  func(c *Config) *bool
	list   func(c *Config) *[]string
	dur    func(c *Config) *time.Duration // a positive Go duration; unset is zero (the consumer's default)
	noFlag bool                           // secret: environment only
}

func options() []option {
	return []option{
		{group: optCommon, flag: "data-dir", env: "ATR_DATA_DIR", usage: "data directory (tokens, ca/, ceremonies/, SQLite database)", str: func(c *Config) *string { return &c.DataDir }},
		{group: optCommon, flag: "log-level", env: "ATR_LOG_LEVEL", usage: "log level: debug, info, warn, error", str: func(c *Config) *string { return &c.LogLevel }},
		{group: optServe | optListen, flag: "listen", env: "ATR_LISTEN", usage: "host:port to listen on", str: func(c *Config) *string { return &c.Listen }},
		{group: optServe | optListen, flag: "insecure-http", env: "ATR_INSECURE_HTTP", usage: "serve plain HTTP (only behind a TLS-terminating proxy)", boolP: func(c *Config) *bool { return &c.InsecureHTTP }},
		{group: optDatabase, flag: "database-url", env: "ATR_DATABASE_URL", usage: "database: sqlite:PATH or postgres://… (default sqlite:DATA_DIR/atr.db)", str: func(c *Config) *string { return &c.DatabaseURL }},
		{group: optServe | optTrust, flag: "trust-domain", env: "ATR_TRUST_DOMAIN", usage: "SPIFFE trust domain of agent identities", str: func(c *Config) *string { return &c.TrustDomain }},
		{group: optToken | optRoot, flag: "pkcs11-module", env: "ATR_PKCS11_MODULE", usage: "PKCS#11 module path", str: func(c *Config) *string { return &c.PKCS11Module }},
		{group: optToken, flag: "pkcs11-token", env: "ATR_PKCS11_TOKEN", usage: "label of the online (issuing) token", str: func(c *Config) *string { return &c.PKCS11Token }},
		{group: optToken, flag: "pkcs11-pin-file", env: "ATR_PKCS11_PIN_FILE", usage: "file holding the issuing token PIN (or env ATR_PKCS11_PIN; default DATA_DIR/pin)", str: func(c *Config) *string { return &c.PKCS11PINFile }},
		{group: optToken, env: "ATR_PKCS11_PIN", noFlag: true, str: func(c *Config) *string { return &c.PKCS11PIN }},
		{group: optRoot, flag: "root-token", env: "ATR_PKCS11_ROOT_TOKEN", usage: "label of the offline root token", str: func(c *Config) *string { return &c.RootToken }},
		{group: optRoot, flag: "root-pin-file", env: "ATR_PKCS11_ROOT_PIN_FILE", usage: "file holding the root token PIN (or env ATR_PKCS11_ROOT_PIN; default: the issuing token's PIN source)", str: func(c *Config) *string { return &c.RootPINFile }},
		{group: optRoot, env: "ATR_PKCS11_ROOT_PIN", noFlag: true, str: func(c *Config) *string { return &c.RootPIN }},
		{group: optServe, flag: "issuing-key", env: "ATR_ISSUING_KEY", usage: "pkcs11: URI of the issuing key (default: newest issuing certificate on the token with a matching key)", str: func(c *Config) *string { return &c.IssuingKey }},
		{group: optServe, flag: "log-key", env: "ATR_LOG_KEY", usage: "pkcs11: URI of the transparency-log key (default pkcs11:token=TOKEN;object=atr-log)", str: func(c *Config) *string { return &c.LogKey }},
		{group: optServe, flag: "log-key-ed25519", env: "ATR_LOG_KEY_ED25519", usage: "pkcs11: URI of the log's Ed25519 key for witnesses (default pkcs11:token=TOKEN;object=atr-log-ed25519)", str: func(c *Config) *string { return &c.LogKeyEd25519 }},
		{group: optServe, flag: "witness", env: "ATR_WITNESSES", usage: "comma-separated C2SP witnesses, each name=URL=vkey (docs/operator.md, Witnesses)", list: func(c *Config) *[]string { return &c.Witnesses }},
		{group: optServe, flag: "witness-timeout", env: "ATR_WITNESS_TIMEOUT", usage: "timeout of each request to a witness, 1s to 5m (default 10s)", dur: func(c *Config) *time.Duration { return &c.WitnessTimeout }},
		{group: optServe, flag: "vrf-key", env: "ATR_VRF_KEY", usage: "pkcs11: URI of the name-index VRF key (default pkcs11:token=TOKEN;object=atr-vrf)", str: func(c *Config) *string { return &c.VRFKey }},
		{group: optServe, flag: "jwt-key", env: "ATR_JWT_KEY", usage: "pkcs11: URI of the JWT-SVID signing key (default pkcs11:token=TOKEN;object=atr-jwt; missing: no JWT-SVIDs)", str: func(c *Config) *string { return &c.JWTKey }},
		{group: optServe, flag: "jwt-previous-keys", env: "ATR_JWT_PREVIOUS_KEYS", usage: "comma-separated pkcs11: URIs of earlier JWT-SVID keys still published after a rotation", list: func(c *Config) *[]string { return &c.JWTPreviousKeys }},
		{group: optServe, flag: "card-key", env: "ATR_CARD_KEY", usage: "pkcs11: URI of the A2A agent-card signing key (default pkcs11:token=TOKEN;object=atr-card; missing: no card signing)", str: func(c *Config) *string { return &c.CardKey }},
		{group: optServe, flag: "public-url", env: "ATR_PUBLIC_URL", usage: "public base URL for CRL/OCSP URLs in certificates (default https://LISTEN)", str: func(c *Config) *string { return &c.PublicURL }},
		{group: optServe, flag: "http-listen", env: "ATR_HTTP_LISTEN", usage: "address of a plain-http listener serving only CRL, OCSP and the CA bundle, named in new certificates (default: off)", str: func(c *Config) *string { return &c.HTTPListen }},
		{group: optServe, flag: "http-public-url", env: "ATR_HTTP_PUBLIC_URL", usage: "http base URL for the CRL/OCSP URLs in certificates when --http-listen is set (default http://HTTP_LISTEN)", str: func(c *Config) *string { return &c.HTTPPublicURL }},
		{group: optServe, flag: "debug-listen", env: "ATR_DEBUG_LISTEN", usage: "loopback host:port of a plain-http listener serving Go's runtime profiles under /debug/pprof/ (CPU, heap, goroutines, execution trace), with no authentication; e.g. 127.0.0.1:6060 (default: off)", str: func(c *Config) *string { return &c.DebugListen }},
		{group: optServe, flag: "tls-cert", env: "ATR_TLS_CERT", usage: "operator-supplied server certificate chain (PEM); default: self-issued from the intermediate", str: func(c *Config) *string { return &c.TLSCert }},
		{group: optServe, flag: "tls-key", env: "ATR_TLS_KEY", usage: "operator-supplied server private key (PEM, mode 0600)", str: func(c *Config) *string { return &c.TLSKey }},
		{group: optServe, env: "ATR_REDIS_URL", noFlag: true, str: func(c *Config) *string { return &c.RedisURL }},
		{group: optServe, flag: "trusted-proxies", env: "ATR_TRUSTED_PROXIES", usage: "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed (a bare address is a /32 or /128)", list: func(c *Config) *[]string { return &c.TrustedProxies }},
		{group: optServe, flag: "cors-origins", env: "ATR_CORS_ORIGINS", usage: "comma-separated origins allowed for CORS (none by default; never *)", list: func(c *Config) *[]string { return &c.CORSOrigins }},
		{group: optServe, flag: "leaf-lifetime", env: "ATR_LEAF_LIFETIME", usage: "validity of agent certificates, 1m to 720h (default 24h)", dur: func(c *Config) *time.Duration { return &c.LeafLifetime }},
		{group: optServe, flag: "rotation-grace", env: "ATR_ROTATION_GRACE", usage: "how long a superseded certificate keeps verifying (default 5m)", dur: func(c *Config) *time.Duration { return &c.RotationGrace }},
		{group: optServe, flag: "pending-timeout", env: "ATR_PENDING_TIMEOUT", usage: "age after which a pending issuance is reconciled (default 30s)", dur: func(c *Config) *time.Duration { return &c.PendingTimeout }},
		{group: optServe, flag: "rate-limits", env: "ATR_RATE_LIMITS", usage: "comma-separated CLASS=RATE/PERIOD[:BURST] overrides, e.g. register=600/h:100 (never off; at most 100x the default)", list: func(c *Config) *[]string { return &c.RateLimits }},
		{group: optServe, flag: "tls-names", env: "ATR_TLS_NAMES", usage: "extra comma-separated DNS names/IPs for the self-issued server certificate", list: func(c *Config) *[]string { return &c.TLSNames }},
	}
}

// bind applies the environment (through lookupEnv) to c and registers the
// flags of the given groups on fs, so that a later fs.Parse overrides the
// environment. It returns an error for a malformed environment value.
func (c *Config) bind(fs *flag.FlagSet, groups optGroup, lookupEnv func(string) (string, bool)) error {
	for _, o := range options() {
		if o.group&groups == 0 {
			continue
		}
		v, ok := lookupEnv(o.env)
		switch {
		case o.str != nil:
			p := o.str(c)
			if ok {
				*p = v
			}
			if !o.noFlag {
				fs.StringVar(p, o.flag, *p, o.usage+" (env "+o.env+")")
			}
		case o.boolP != nil:
			p := o.boolP(c)
			if ok && v != "" {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("config: %s=%q: not a boolean", o.env, v)
				}
				*p = b
			}
			fs.BoolVar(p, o.flag, *p, o.usage+" (env "+o.env+")")
		case o.dur != nil:
			p := o.dur(c)
			if ok && v != "" {
				d, err := parseDuration(v)
				if err != nil {
					return fmt.Errorf("config: %s=%q: %v", o.env, v, err)
				}
				*p = d
			}
			fs.Func(o.flag, o.usage+" (env "+o.env+")", func(s string) (err error) {
				*p, err = parseDuration(s)
				return err
			})
		case o.list != nil:
			p := o.list(c)
			if ok {
				*p = splitList(v)
			}
			fs.Func(o.flag, o.usage+" (env "+o.env+")", func(s string) error {
				*p = splitList(s)
				return nil
			})
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Complete fills the derived fields (DatabaseURL, LogKey, VRFKey, PublicURL, the PIN
// file default) from the others. It does not validate.
func (c *Config) Complete() {
	if c.DatabaseURL == "" && c.DataDir != "" {
		c.DatabaseURL = "sqlite:" + filepath.Join(c.DataDir, "atr.db")
	}
	if c.LogKey == "" && c.PKCS11Token != "" {
		c.LogKey = "pkcs11:token=" + c.PKCS11Token + ";object=" + defaultLogKeyLabel
	}
	if c.LogKeyEd25519 == "" && c.PKCS11Token != "" {
		c.LogKeyEd25519 = "pkcs11:token=" + c.PKCS11Token + ";object=" + defaultLogEd25519Label
	}
	if c.VRFKey == "" && c.PKCS11Token != "" {
		c.VRFKey = "pkcs11:token=" + c.PKCS11Token + ";object=" + defaultVRFKeyLabel
	}
	if c.JWTKey == "" && c.PKCS11Token != "" {
		c.JWTKey = "pkcs11:token=" + c.PKCS11Token + ";object=" + defaultJWTKeyLabel
	}
	if c.CardKey == "" && c.PKCS11Token != "" {
		c.CardKey = "pkcs11:token=" + c.PKCS11Token + ";object=" + defaultCardKeyLabel
	}
	if c.PublicURL == "" && c.Listen != "" {
		scheme := "https"
		if c.InsecureHTTP {
			scheme = "http"
		}
		c.PublicURL = scheme + "://" + c.Listen
	}
	if c.HTTPPublicURL == "" && c.HTTPListen != "" {
		c.HTTPPublicURL = "http://" + c.HTTPListen
	}
	if c.PKCS11PINFile == "" && c.PKCS11PIN == "" && c.DataDir != "" {
		c.PKCS11PINFile = filepath.Join(c.DataDir, "pin")
	}
	if c.RootPINFile == "" && c.RootPIN == "" {
		c.RootPINFile, c.RootPIN = c.PKCS11PINFile, c.PKCS11PIN
	}
}

// Validate reports every problem with c at once. Call Complete first.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("config: "+format, args...)) }

	if c.DataDir == "" {
		bad("data dir (ATR_DATA_DIR) must not be empty")
	}
	if err := checkListen(c.Listen); err != nil {
		bad("listen address (ATR_LISTEN) %q: %v", c.Listen, err)
	}
	if c.HTTPListen != "" {
		if err := checkListen(c.HTTPListen); err != nil {
			bad("http listen address (ATR_HTTP_LISTEN) %q: %v", c.HTTPListen, err)
		} else if c.HTTPListen == c.Listen {
			bad("http listen address (ATR_HTTP_LISTEN) %q is also the listen address (ATR_LISTEN)", c.HTTPListen)
		}
	}
	if c.DebugListen != "" {
		if err := checkDebugListen(c.DebugListen); err != nil {
			bad("debug listen address (ATR_DEBUG_LISTEN) %q: %v", c.DebugListen, err)
		} else if _, port, _ := net.SplitHostPort(c.DebugListen); port != "0" && (c.DebugListen == c.Listen || c.DebugListen == c.HTTPListen) {
			bad("debug listen address (ATR_DEBUG_LISTEN) %q is also another listener's address", c.DebugListen)
		}
	}
	if c.HTTPPublicURL != "" {
		if c.HTTPListen == "" {
			bad("http public URL (ATR_HTTP_PUBLIC_URL) needs an http listen address (ATR_HTTP_LISTEN)")
		} else if err := checkHTTPPublicURL(c.HTTPPublicURL); err != nil {
			bad("http public URL (ATR_HTTP_PUBLIC_URL) %q: %v", c.HTTPPublicURL, err)
		}
	}
	if err := checkDatabaseURL(c.DatabaseURL); err != nil {
		bad("database URL (ATR_DATABASE_URL): %v", err)
	}
	if err := ca.ValidateTrustDomain(c.TrustDomain); err != nil {
		bad("trust domain (ATR_TRUST_DOMAIN): %v", err)
	}
	if c.PKCS11Module == "" {
		bad("PKCS#11 module (ATR_PKCS11_MODULE) must not be empty")
	}
	for _, t := range []struct{ name, env, v string }{
		{"issuing token", "ATR_PKCS11_TOKEN", c.PKCS11Token},
		{"root token", "ATR_PKCS11_ROOT_TOKEN", c.RootToken},
	} {
		if t.v == "" || len(t.v) > 32 {
			bad("%s label (%s) %q: must be 1 to 32 characters", t.name, t.env, t.v)
		}
	}
	if c.PKCS11Token != "" && c.PKCS11Token == c.RootToken {
		bad("the root token and the issuing token must be different tokens (both %q)", c.RootToken)
	}
	for _, k := range []struct{ name, env, v string }{
		{"issuing key", "ATR_ISSUING_KEY", c.IssuingKey},
		{"log key", "ATR_LOG_KEY", c.LogKey},
		{"VRF key", "ATR_VRF_KEY", c.VRFKey},
		{"JWT-SVID key", "ATR_JWT_KEY", c.JWTKey},
		{"agent-card key", "ATR_CARD_KEY", c.CardKey},
	} {
		if k.v == "" {
			continue
		}
		if err := checkKeyURI(k.v, c.PKCS11Token); err != nil {
			bad("%s (%s): %v", k.name, k.env, err)
		}
	}
	if c.PublicURL != "" {
		if err := checkPublicURL(c.PublicURL, c.InsecureHTTP); err != nil {
			bad("public URL (ATR_PUBLIC_URL) %q: %v", c.PublicURL, err)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("--tls-cert (ATR_TLS_CERT) and --tls-key (ATR_TLS_KEY) must be given together")
	}
	if c.InsecureHTTP && c.TLSCert != "" {
		bad("--insecure-http (ATR_INSECURE_HTTP) conflicts with --tls-cert")
	}
	for _, n := range c.TLSNames {
		ip := net.ParseIP(n)
		var err error
		if ip != nil {
			err = ca.ValidateServerNames(nil, []net.IP{ip})
		} else {
			err = ca.ValidateServerNames([]string{n}, nil)
		}
		if err != nil {
			bad("TLS name (ATR_TLS_NAMES) %q is neither an IP address nor a DNS name: %v", n, err)
		}
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		bad("ATR_REDIS_URL must be a redis:// or rediss:// URL")
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		bad("log level (ATR_LOG_LEVEL): %v", err)
	}
	// The leaf profile as the issuer will get it (placeholder key ID).
	if err := c.leafProfile("0").Validate(); err != nil {
		bad("leaf profile (ATR_LEAF_LIFETIME, ATR_TRUST_DOMAIN, ATR_PUBLIC_URL): %v", err)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"rotation grace (ATR_ROTATION_GRACE)", c.RotationGrace},
		{"pending timeout (ATR_PENDING_TIMEOUT)", c.PendingTimeout},
		{"leaf lifetime (ATR_LEAF_LIFETIME)", c.LeafLifetime},
	} {
		if d.v < 0 {
			bad("%s %v must not be negative", d.name, d.v)
		}
	}
	for _, k := range c.JWTPreviousKeys {
		if err := checkKeyURI(k, c.PKCS11Token); err != nil {
			bad("previous JWT-SVID key (ATR_JWT_PREVIOUS_KEYS) %q: %v", k, err)
		}
	}
	if c.LogKeyEd25519 != "" {
		if err := checkKeyURI(c.LogKeyEd25519, c.PKCS11Token); err != nil {
			bad("log Ed25519 key (ATR_LOG_KEY_ED25519): %v", err)
		}
	}
	if _, err := witness.ParseWitnesses(strings.Join(c.Witnesses, ",")); err != nil {
		bad("witnesses (ATR_WITNESSES): %v", err)
	}
	if d := c.WitnessTimeout; d != 0 && (d < time.Second || d > 5*time.Minute) {
		bad("witness timeout (ATR_WITNESS_TIMEOUT) %v outside [1s, 5m]", d)
	}
	// The API's settings as the server will get them: trusted proxies (a
	// bare address is a /32 or /128), CORS origins, rate limits.
	if ac, err := c.apiConfig(); err != nil {
		bad("rate limits (ATR_RATE_LIMITS): %v", err)
	} else if err := ac.Validate(); err != nil {
		bad("ATR_TRUSTED_PROXIES, ATR_CORS_ORIGINS or ATR_RATE_LIMITS: %v", err)
	}
	return errors.Join(errs...)
}

// parseDuration reads a duration setting: a positive Go duration.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want a positive duration such as 24h or 90s", s)
	}
	return d, nil
}

// leafProfile is the agent-certificate profile the issuer gets; keyID is the
// issuing CA's key ID, which names its CRL.
func (c *Config) leafProfile(keyID string) ca.Profile {
	base := c.revocationBase()
	return ca.Profile{
		TrustDomain: c.TrustDomain,
		Lifetime:    c.LeafLifetime,
		CRLURL:      base + "/v1/crl/" + keyID,
		OCSPURL:     base + "/v1/ocsp",
		ServerAuth:  true,
	}
}

// apiConfig is the API's configuration (api.Config.Validate judges it).
func (c *Config) apiConfig() (api.Config, error) {
	rl, err := api.ParseRateLimits(c.RateLimits)
	if err != nil {
		return api.Config{}, err
	}
	return api.Config{
		TrustDomain:    c.TrustDomain,
		TLS:            !c.InsecureHTTP || c.BehindTLSProxy(),
		CORSOrigins:    c.CORSOrigins,
		TrustedProxies: c.TrustedProxies,
		RateLimits:     rl,
		PublicURL:      c.publicBase(),
	}, nil
}

func checkDatabaseURL(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		u, err := url.Parse(s)
		if err != nil {
			return errors.New("not a valid postgres:// URL")
		}
		if u.Host == "" {
			return errors.New("postgres URL has no host")
		}
		return nil
	case strings.HasPrefix(s, "sqlite:"), strings.HasPrefix(s, "file:"):
		p := strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(s, "sqlite:"), "file:"), "//")
		if p == "" || strings.HasPrefix(p, ":memory:") {
			return errors.New("SQLite URL needs a file path (in-memory is not durable)")
		}
		return nil
	case strings.Contains(s, "://"):
		return errors.New("unsupported scheme (use sqlite:PATH or postgres://…)")
	}
	return nil // a bare path is an SQLite file
}

// checkTrustDomain reports whether n can be a DNS name of the server
// certificate, by ca's rule (serverNames filters candidate names with it).
func checkTrustDomain(n string) error { return ca.ValidateServerNames([]string{n}, nil) }

// checkListen checks a host:port listen address.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("bad port")
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return errors.New("bad host")
	}
	return nil
}

// checkHTTPPublicURL checks the base URL of the distribution listener: plain
// http, as relying parties fetching a CRL or asking OCSP expect.
func checkHTTPPublicURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a URL")
	case u.Scheme != "http":
		return errors.New("scheme must be http")
	case u.Host == "":
		return errors.New("no host")
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return errors.New("must not contain user info, query or fragment")
	}
	return nil
}

func checkPublicURL(s string, insecure bool) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.Scheme != "https" && !(insecure && u.Scheme == "http"):
		return errors.New("scheme must be https (http only with --insecure-http)")
	case u.Host == "":
		return errors.New("no host")
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return errors.New("must not contain user info, query or fragment")
	}
	return nil
}

// BehindTLSProxy reports whether clients reach a plain-HTTP server over
// HTTPS through a TLS-terminating proxy (the public URL is https).
func (c *Config) BehindTLSProxy() bool {
	return c.InsecureHTTP && strings.HasPrefix(c.PublicURL, "https://")
}

// publicBase is PublicURL without a trailing slash.
func (c *Config) publicBase() string { return strings.TrimRight(c.PublicURL, "/") }

// revocationBase is the base URL of the CRL and OCSP URLs in new
// certificates: HTTPPublicURL when the http distribution listener is on,
// else PublicURL; without a trailing slash.
func (c *Config) revocationBase() string {
	if c.HTTPListen != "" && c.HTTPPublicURL != "" {
		return strings.TrimRight(c.HTTPPublicURL, "/")
	}
	return c.publicBase()
}
