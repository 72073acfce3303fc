package main

// logmonitor.go is `atr log monitor`: an owner's watch over the public log
// for certificates issued under its names that it did not request. The
// logic is rp.Monitor; this file wires flags, files and the API client.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/rp"
)

// errUnknownCerts marks a monitor run that found certificates the owner
// does not know: exit status 1.
var errUnknownCerts = errors.New("certificates the owner did not request were issued for watched names")

// vrfIndexer adapts the API client to rp.VRFIndexer.
type vrfIndexer struct {
	api interface {
		VRFIndex(ctx context.Context, name string) (*client.VRFIndexResponse, error)
	}
}

func (v vrfIndexer) VRFIndex(ctx context.Context, name string) (rp.Watched, error) {
	res, err := v.api.VRFIndex(ctx, name)
	if err != nil {
		return rp.Watched{}, explain("the server", err)
	}
	return rp.Watched{Name: res.Name, Index: res.Index, Proof: res.Proof}, nil
}

func runLogMonitor(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("log monitor", "log monitor --server URL --state FILE --watch NAME [--watch NAME…] [--known FILE|DIR] [--api-key-file FILE] [--trust-domain TD] [--log-key FILE] [--vrf-key FILE] [--witness KEY…] [--witness-threshold N]",
		`Watch the public transparency log for certificates issued under your
names that you did not request.

Each --watch NAME (an agent name or a namespace such as "acme") is known to
the log only by its VRF index. The first time a name is watched, its index
and proof are asked of the server (POST /v1/log/vrf, with the owner's API
key: --api-key-file or ATR_API_KEY; names inside the key's namespace) and the
proof is checked with the pinned VRF key (--vrf-key); the state file keeps
them, so later runs need no API key.

Each run:
  1. fetches the checkpoint and checks the log's signature (--log-key: PEM
     or verifier key strings) and the witness policy (--witness keys, at
     least --witness-threshold cosignatures; default: all of them);
  2. checks it extends the checkpoint of the last run (no rollback, no fork;
     GET /v1/log/proof/consistency);
  3. downloads the leaves added since (GET /v1/log/entries), checks that
     they hash to the signed root, and reports every leaf whose
     name_indexes hold a watched index (version 1 leaves: whose agent is the
     name or under it) and whose certificate fingerprint is not in --known
     (a file of SHA-256 fingerprints one per line, a PEM file of
     certificates, or a directory of *.pem);
  4. only then saves the new position to --state, atomically. A run that
     fails or is killed saves nothing and the next run redoes its scan, so
     nothing is missed across restarts. A newly watched name makes the run
     scan from the first leaf.
Each unknown certificate is reported by the run that reaches its leaf, once:
alert on the exit status.

It trusts nothing but the log key, the VRF key and the witness keys.

Exit status: 0 the log verified and no unknown certificate; 1 unknown
certificates were found (each printed), a check failed, or an error; 2 a
usage error.`,
		`atr log monitor --server https://atr.example.org --api-key-file acme.apikey \
    --log-key log.vkey --vrf-key vrf-key.pem --trust-domain agents.example.org \
    --witness 'witness.example+6b1e0f3a+AXd…' --state acme.monitor.json \
    --watch acme --known ./acme-certs/`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle|afAPIKey)
	var ro receiptOpts
	var stateFile, knownPath, trustDomain string
	var watch []string
	envString(fs, a.lookupEnv, &ro.dataDir, "data-dir", "ATR_DATA_DIR", "./var", "where the default --log-key and --vrf-key live")
	envString(fs, a.lookupEnv, &trustDomain, "trust-domain", "ATR_TRUST_DOMAIN", defaultTrustDomain, "the SPIFFE trust domain of the agents (as the server's --trust-domain)")
	fs.StringVar(&ro.logKey, "log-key", "", "the log's public key, PEM or verifier key strings (default DATA_DIR/ca/log-key.pem)")
	fs.StringVar(&ro.vrfKey, "vrf-key", "", "the log's VRF public key, PEM (default DATA_DIR/ca/vrf-key.pem)")
	fs.Func("witness", "a witness's cosignature verifier key, or a file of them (repeatable)", func(v string) error {
		ro.witnesses = append(ro.witnesses, v)
		return nil
	})
	fs.IntVar(&ro.threshold, "witness-threshold", -1, "how many --witness keys must have cosigned; -1: all of them")
	envString(fs, a.lookupEnv, &stateFile, "state", "ATR_MONITOR_STATE", "", "the monitor's state file, JSON (created on the first run; required)")
	fs.Func("watch", "an agent name or namespace to watch (repeatable; at least one)", func(v string) error {
		watch = append(watch, v)
		return nil
	})
	fs.StringVar(&knownPath, "known", "", "the certificates you requested: SHA-256 fingerprints one per line, a PEM file, or a directory of *.pem")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	switch {
	case stateFile == "":
		return usagef("--state (ATR_MONITOR_STATE) is required")
	case len(watch) == 0:
		return usagef("at least one --watch NAME is required")
	case trustDomain == "":
		return usagef("--trust-domain (ATR_TRUST_DOMAIN) must not be empty")
	}
	if ro.logKey == "" {
		ro.logKey = filepath.Join(ro.dataDir, "ca", "log-key.pem")
	}
	if ro.vrfKey == "" {
		ro.vrfKey = filepath.Join(ro.dataDir, "ca", "vrf-key.pem")
	}
	policy, err := witnessPolicy(ro.witnesses, ro.threshold)
	if err != nil {
		return err
	}
	vrfKey, err := rp.LoadVRFKey(ro.vrfKey)
	if err != nil {
		return err
	}
	known, err := rp.LoadKnown(knownPath)
	if err != nil {
		return err
	}
	stateData, err := agent.ReadFile(stateFile, 1<<20)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading the state file: %w", err)
	}
	state, err := rp.ParseState(stateData)
	if err != nil {
		return fmt.Errorf("state file %s: %w", stateFile, err)
	}
	apiKey, err := o.readAPIKey()
	if err != nil {
		return err
	}
	c, err := o.newClient(apiKey, nil)
	if err != nil {
		return err
	}
	var indexer rp.VRFIndexer
	if apiKey != "" {
		indexer = vrfIndexer{c}
	}
	res, next, err := monitorOnce(ctx, rp.Monitor{Log: logSource{c}, Witnesses: policy, VRFKey: vrfKey, TrustDomain: trustDomain, Known: known},
		indexer, ro.logKey, watch, state)
	if err != nil {
		return err
	}
	data, err := rp.MarshalState(next)
	if err != nil {
		return err
	}
	if err := agent.WriteFile(stateFile, data, 0o600, true); err != nil {
		return fmt.Errorf("saving the state file: %w", err)
	}
	return a.printMonitor(res, next)
}

// monitorOnce completes m (log verifiers for the checkpoint's origin,
// watched names) and runs one scan.
func monitorOnce(ctx context.Context, m rp.Monitor, indexer rp.VRFIndexer, logKeyFile string, watch []string, state rp.MonitorState) (*rp.MonitorResult, rp.MonitorState, error) {
	origin := state.Origin
	if origin == "" {
		msg, err := m.Log.Checkpoint(ctx)
		if err != nil {
			return nil, state, fmt.Errorf("fetching the checkpoint: %w", err)
		}
		origin = rp.NoteOrigin(msg)
	}
	lv, err := logVerifiers(logKeyFile, origin)
	if err != nil {
		return nil, state, err
	}
	m.LogVerifiers = lv
	watched, err := rp.ResolveWatched(ctx, indexer, watch, state)
	switch {
	case errors.Is(err, rp.ErrWatchName):
		return nil, state, usagef("--watch: %v", err)
	case errors.Is(err, rp.ErrWatchIndex):
		return nil, state, usagef("%v: an API key (--api-key-file) is needed to get its index", err)
	case errors.Is(err, rp.ErrMonitor):
		return nil, state, fmt.Errorf("%w: %v", errLogCheck, err)
	case err != nil:
		return nil, state, err
	}
	res, next, err := m.Scan(ctx, state, watched)
	if err != nil {
		if errors.Is(err, rp.ErrMonitor) || errors.Is(err, rp.ErrLogSignature) || errors.Is(err, rp.ErrWitnessPolicy) {
			return nil, state, fmt.Errorf("%w: %v", errLogCheck, err)
		}
		return nil, state, err
	}
	return res, next, nil
}

func (a *app) printMonitor(res *rp.MonitorResult, st rp.MonitorState) error {
	cp := res.Checkpoint
	fmt.Fprintf(a.stdout, "checkpoint: origin %s, size %d, root %s: signature and witness policy OK\n", cp.Origin, cp.Size, cp.Hash)
	fmt.Fprintf(a.stdout, "scanned leaves %d to %d (%d); %d for watched names\n", res.PreviousSize, cp.Size, res.Scanned, res.Matched)
	for _, w := range st.Watched {
		fmt.Fprintf(a.stdout, "watching %s (index %s)\n", w.Name, w.Index)
	}
	for _, f := range res.Unknown {
		fmt.Fprintf(a.stdout, "UNKNOWN CERTIFICATE: leaf %d, %s at %s, fingerprint %s, under %s\n",
			f.Index, f.Entry.Type, f.Entry.Time.UTC().Format(time.RFC3339), f.Entry.Fingerprint, f.Watched)
	}
	if len(res.Unknown) > 0 {
		return fmt.Errorf("%w: %d (see above)", errUnknownCerts, len(res.Unknown))
	}
	fmt.Fprintln(a.stdout, "no unknown certificate")
	return nil
}
