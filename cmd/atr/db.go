package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/registry"
)

func runMigrate(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("migrate", "migrate [flags]",
		`Apply the embedded database migrations (SQLite or PostgreSQL) and print the
schema version. Idempotent and safe with several replicas (migrations take a
lock). 'atr serve' also migrates at start-up.`,
		`atr migrate --data-dir ./var
ATR_DATABASE_URL=postgres://atr@127.0.0.1:5432/atr?sslmode=disable atr migrate`)
	cfg, err := a.loadConfig(fs, optCommon|optDatabase, args)
	if err != nil {
		return err
	}
	log := newLogger(a.stderr, cfg.LogLevel)
	store, err := openStore(ctx, cfg, a)
	if err != nil {
		return err
	}
	defer store.Close()
	n, err := store.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	v, err := store.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	log.WithFields(map[string]any{"applied": n, "schema_version": v}).Info("database migrated")
	fmt.Fprintf(a.stdout, "applied %d migration(s); schema version %d\n", n, v)
	return nil
}

// openStore opens the configured database and migrates it.
func openStore(ctx context.Context, cfg Config, a *app) (*registry.Store, error) {
	log := newLogger(a.stderr, cfg.LogLevel)
	store, err := registry.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return nil, fmt.Errorf("opening the database: %w", err)
	}
	return store, nil
}

func runAPIKey(ctx context.Context, a *app, args []string) error {
	return a.subcommand(ctx, "apikey", map[string]func(context.Context, *app, []string) error{
		"create": runAPIKeyCreate,
		"list":   runAPIKeyList,
		"revoke": runAPIKeyRevoke,
	}, map[string]string{
		"create": "create an API key directly in the database (bootstrap); prints it once",
		"list":   "list the API keys over the API (admin API key); never their secrets",
		"revoke": "revoke an API key by ID over the API (admin API key)",
	}, args)
}

func runAPIKeyCreate(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("apikey create", "apikey create --owner OWNER --namespace NS --scopes S1,S2 [flags]",
		`Create an API key directly in the database, for bootstrapping the first
administrator (later keys: POST /v1/admin/apikeys). The key is printed once
(or written to --out with mode 0600) and stored only as a hash. Scopes:
agents:read, agents:write, admin. The namespace is the agent-name suffix the
key may register under ("acme" allows "billing-bot.acme").`,
		`atr apikey create --data-dir ./var --owner platform-team --namespace acme --scopes agents:read,agents:write --expires-in 720h
atr apikey create --owner admin --namespace admin --scopes admin --out ./var/admin.apikey`)
	var (
		owner     = fs.String("owner", "", "owner (team) the key belongs to (required)")
		namespace = fs.String("namespace", "", "agent-name suffix the key may register under (required)")
		scopes    = fs.String("scopes", "", "comma-separated scopes: agents:read, agents:write, admin (required)")
		expiresIn = fs.Duration("expires-in", registry.DefaultAPIKeyLifetime, "lifetime of the key")
		out       = fs.String("out", "", "write the key to this new file (mode 0600) instead of printing it")
	)
	cfg, err := a.loadConfig(fs, optCommon|optDatabase, args)
	if err != nil {
		return err
	}
	switch {
	case *owner == "":
		return usagef("--owner is required")
	case *namespace == "":
		return usagef("--namespace is required")
	case *scopes == "":
		return usagef("--scopes is required")
	case *expiresIn <= 0:
		return usagef("--expires-in must be positive")
	}
	if *out != "" {
		if _, err := os.Stat(*out); err == nil {
			return fmt.Errorf("%s already exists; refusing to overwrite it", *out)
		}
	}
	log := newLogger(a.stderr, cfg.LogLevel)
	store, err := openStore(ctx, cfg, a)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	reg, err := registry.New(registry.Config{Store: store, TrustDomain: defaultTrustDomain, Log: log, Now: a.now})
	if err != nil {
		return err
	}
	key, secret, err := reg.CreateAPIKey(ctx, registry.SystemActor(), *owner, *namespace, splitList(*scopes), *expiresIn)
	if err != nil {
		return fmt.Errorf("creating the API key: %w", err)
	}
	exp := "never"
	if key.ExpiresAt != nil {
		exp = key.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if *out != "" {
		if err := agent.WriteFile(*out, []byte(secret+"\n"), 0o600, false); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "created API key %s (owner %s, namespace %s, scopes %s, expires %s); written to %s\n",
			key.ID, key.Owner, key.Namespace, strings.Join(key.Scopes, ","), exp, *out)
		return nil
	}
	fmt.Fprintf(a.stderr, "created API key %s (owner %s, namespace %s, scopes %s, expires %s); it is shown only once:\n",
		key.ID, key.Owner, key.Namespace, strings.Join(key.Scopes, ","), exp)
	fmt.Fprintln(a.stdout, secret)
	return nil
}
