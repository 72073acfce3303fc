package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Issuer issues agent certificates under one issuing (intermediate)
// certificate whose private key is behind signer. It is safe for concurrent
// use.
type Issuer struct {
	signer  crypto.Signer
	cert    *x509.Certificate
	chain   []*x509.Certificate
	profile Profile

	// The lint issuer: a throwaway key of the same algorithm and size as the
	// issuing key, generated once per Issuer and never persisted, and a
	// self-signed certificate with the issuing certificate's exact subject
	// and subject key identifier. Leaves signed by it have the same
	// TBSCertificate as leaves signed by the real issuer.
	lintSigner crypto.Signer
	lintCert   *x509.Certificate
	lints      *lintSet
	// leafSig: the issuer's signature algorithm in a leaf's TBS, and the
	// placeholder signature of lint certificates (leaftbs.go).
	leafSig leafSignature
}

// NewIssuer returns an Issuer signing with signer under cert, for leaves of
// profile p. chain holds the certificates above cert, nearest first (its
// issuer, that one's issuer, …); it may end with the root or stop before it.
//
// NewIssuer checks that signer's public key is cert's, that cert is a CA
// allowed to sign certificates and CRLs and has a subject key identifier,
// that each certificate of chain signed the one before it, that cert's name
// constraints (if any) permit the trust domain, and then issues one
// self-test leaf through the lint path so that a profile zlint or ATR's own
// lints would refuse fails here, at start-up, rather than on the first
// request. It generates the throwaway lint key, which for RSA-4096 takes a
// moment.
func NewIssuer(signer crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate, p Profile) (*Issuer, error) {
	if signer == nil || cert == nil {
		return nil, errors.New("ca: new issuer: nil signer or certificate")
	}
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("ca: new issuer: signer's public key does not match the issuing certificate")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("ca: new issuer: issuing certificate is not a CA")
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 || cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, errors.New("ca: new issuer: issuing certificate lacks keyCertSign or cRLSign key usage")
	}
	if len(cert.SubjectKeyId) == 0 {
		return nil, errors.New("ca: new issuer: issuing certificate has no subject key identifier")
	}
	if err := checkPermitsTrustDomain(cert, p.TrustDomain); err != nil {
		return nil, fmt.Errorf("ca: new issuer: %w", err)
	}
	child := cert
	for k, c := range chain {
		if c == nil {
			return nil, fmt.Errorf("ca: new issuer: chain[%d] is nil", k)
		}
		if err := child.CheckSignatureFrom(c); err != nil {
			return nil, fmt.Errorf("ca: new issuer: chain[%d] did not sign the certificate below it: %w", k, err)
		}
		child = c
	}
	i := &Issuer{
		signer:  signer,
		cert:    cert,
		chain:   append([]*x509.Certificate(nil), chain...),
		profile: p,
	}
	if i.lintSigner, err = newLintKey(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("ca: new issuer: %w", err)
	}
	if i.lintCert, err = newLintIssuerCert(cert, i.lintSigner); err != nil {
		return nil, fmt.Errorf("ca: new issuer: %w", err)
	}
	if i.lints, err = newLintSet(); err != nil {
		return nil, fmt.Errorf("ca: new issuer: %w", err)
	}
	if err := i.selfTest(); err != nil {
		return nil, fmt.Errorf("ca: new issuer: self-test issuance: %w", err)
	}
	return i, nil
}

// Certificate returns the issuing certificate.
func (i *Issuer) Certificate() *x509.Certificate { return i.cert }

// Chain returns what a client needs after its leaf: the issuing certificate
// followed by the chain given to NewIssuer. The slice is a copy.
func (i *Issuer) Chain() []*x509.Certificate {
	return append([]*x509.Certificate{i.cert}, i.chain...)
}

// Profile returns the leaf profile with defaults applied.
func (i *Issuer) Profile() Profile { return i.profile }

// Prepared is a leaf certificate that passed pre-issuance linting and waits
// for its real signature. Record TBS (and Serial) durably before calling
// Issuer.Sign.
type Prepared struct {
	tmpl *x509.Certificate
	pub  crypto.PublicKey
	tbs  []byte
	name string

	issuer *Issuer                 // the Issuer that prepared it: only it signs
	sigAlg x509.SignatureAlgorithm // the issuer's, as in tbs
	algID  []byte                  // DER AlgorithmIdentifier of sigAlg, as in tbs
	digest []byte                  // what the issuer signs: the digest of tbs when it was linted
	lc     *x509.Certificate       // the lint certificate (tbs under a placeholder or lint-key signature), parsed
}

// TBS returns the DER TBSCertificate that Sign will have the issuer sign.
func (p *Prepared) TBS() []byte { return append([]byte(nil), p.tbs...) }

// Serial returns the certificate's serial number.
func (p *Prepared) Serial() *big.Int { return new(big.Int).Set(p.tmpl.SerialNumber) }

// NotBefore returns the start of the certificate's validity.
func (p *Prepared) NotBefore() time.Time { return p.tmpl.NotBefore }

// NotAfter returns the end of the certificate's validity.
func (p *Prepared) NotAfter() time.Time { return p.tmpl.NotAfter }

// AgentName returns the agent name the certificate will carry.
func (p *Prepared) AgentName() string { return p.name }

// Prepare builds the leaf certificate for agentName (which must already be
// normalized: NormalizeAgentName(agentName) == agentName) over the public key
// of csr, which ParseCSR checked (key policy and self-signature: the only
// way to get a *CSR), with the given serial (from NewSerial), issued at now.
// Of the CSR only the public key is used. The template's TBSCertificate
// (leafTBS) is linted in a certificate with a placeholder signature; any
// error or fatal finding is a *LintError.
// Policy refusals (name, CSR) are *PolicyError. Prepare refuses to issue a
// leaf that would outlive the issuing certificate or predate it.
func (i *Issuer) Prepare(csr *CSR, agentName string, serial *big.Int, now time.Time) (*Prepared, error) {
	if csr == nil || csr.pub == nil {
		return nil, policyErr("csr", "missing (a CSR comes from ParseCSR)")
	}
	return i.prepare(csr.pub, agentName, serial, now)
}

func (i *Issuer) prepare(pub crypto.PublicKey, agentName string, serial *big.Int, now time.Time) (*Prepared, error) {
	if n, err := NormalizeAgentName(agentName); err != nil {
		return nil, err
	} else if n != agentName {
		return nil, policyErr("name", "not normalized")
	}
	if err := checkSerial(serial); err != nil {
		return nil, fmt.Errorf("ca: prepare: %w", err)
	}
	if serial.BitLen() < minSerialBits {
		return nil, fmt.Errorf("ca: prepare: serial has fewer than %d bits", minSerialBits)
	}
	tmpl, err := i.leafTemplate(pub, agentName, serial, now)
	if err != nil {
		return nil, err
	}
	spki, err := spkiOf(pub)
	if err != nil {
		return nil, err
	}
	tbs, err := i.leafTBS(tmpl, spki, i.leafSig.algID)
	if err != nil {
		return nil, err
	}
	lc, err := i.lintTBS(tbs, i.agentProfile(agentName))
	if err != nil {
		return nil, err
	}
	return i.newPrepared(tmpl, pub, lc, agentName)
}

// leafTemplate builds the agent certificate template from the profile. The
// only inputs from the requester are the public key and the (normalized)
// name.
func (i *Issuer) leafTemplate(pub crypto.PublicKey, name string, serial *big.Int, now time.Time) (*x509.Certificate, error) {
	now = now.UTC().Truncate(time.Second)
	notBefore := now.Add(-i.profile.Backdate)
	notAfter := now.Add(i.profile.Lifetime)
	if now.Before(i.cert.NotBefore) {
		return nil, fmt.Errorf("ca: prepare: issuing certificate is not valid until %v", i.cert.NotBefore)
	}
	if notBefore.Before(i.cert.NotBefore) {
		notBefore = i.cert.NotBefore.UTC()
	}
	if notAfter.After(i.cert.NotAfter) {
		return nil, fmt.Errorf("ca: prepare: issuing certificate expires at %v, before the leaf would (%v); rotate the intermediate", i.cert.NotAfter, notAfter)
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(AgentURI(i.profile.TrustDomain, name))
	if err != nil {
		return nil, fmt.Errorf("ca: prepare: building SPIFFE ID: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           i.leafEKUs(),
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
	}
	if i.profile.CRLURL != "" {
		tmpl.CRLDistributionPoints = []string{i.profile.CRLURL}
	}
	if i.profile.OCSPURL != "" {
		tmpl.OCSPServer = []string{i.profile.OCSPURL}
	}
	return tmpl, nil
}

func (i *Issuer) leafEKUs() []x509.ExtKeyUsage {
	if i.profile.ServerAuth {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// SelfCheckingSigner is a crypto.Signer that verifies every signature it
// returns under its public key and fails instead of returning one that does
// not verify, as hsm.Signer does. Issuer.Sign verifies the signatures of
// other signers itself.
type SelfCheckingSigner interface {
	crypto.Signer
	ChecksSignatures()
}

// Sign has the issuer's signer sign the prepared certificate's
// TBSCertificate — the exact bytes that were linted and recorded (p.TBS()),
// not a second encoding of the template — and returns the certificate. The
// signature is checked before the certificate is returned, once: by the
// signer when it is a SelfCheckingSigner (the token's signer checks every
// signature under the key NewIssuer matched to the issuing certificate),
// here otherwise (TestSignCatchesMisbehavingSigner). Sign refuses a Prepared
// of another Issuer and one whose TBS changed since it was linted.
func (i *Issuer) Sign(p *Prepared) (*x509.Certificate, error) {
	if p == nil || p.tmpl == nil {
		return nil, errors.New("ca: sign: nil prepared certificate")
	}
	if p.issuer != i {
		return nil, errors.New("ca: sign: the certificate was prepared by another issuer")
	}
	digest, opts, err := tbsDigest(p.tbs, p.sigAlg)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	if !bytes.Equal(digest, p.digest) {
		return nil, errors.New("ca: sign: TBSCertificate differs from the linted one")
	}
	sig, err := i.signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: %w", err)
	}
	if _, ok := i.signer.(SelfCheckingSigner); !ok {
		if err := i.cert.CheckSignature(p.sigAlg, p.tbs, sig); err != nil {
			return nil, fmt.Errorf("ca: sign: the signer's signature does not verify under the issuing certificate: %w", err)
		}
	}
	der, err := certificateDER(p.tbs, p.algID, sig)
	if err != nil {
		return nil, fmt.Errorf("ca: sign: encoding the certificate: %w", err)
	}
	// The certificate differs from the lint certificate only in its
	// signature: the same TBSCertificate and, outside it, the same
	// algorithm identifier (newPrepared). So it parses as the lint
	// certificate did but for Raw and Signature, and is not parsed again
	// (TestSignedCertificateIsItsParse). It shares the parsed fields (and
	// its Raw* slices, bytes equal to those in Raw) with the lint
	// certificate, which nothing outside this package sees.
	c := *p.lc
	c.Raw, c.Signature = der, sig
	return &c, nil
}

// newPrepared makes the Prepared of a template whose lint certificate
// (signed with the lint key, so with the issuer's signature algorithm) is
// lc: its TBSCertificate, the signature algorithm and its digest.
func (i *Issuer) newPrepared(tmpl *x509.Certificate, pub crypto.PublicKey, lc *x509.Certificate, name string) (*Prepared, error) {
	algID, err := tbsSignatureAlgorithm(lc.RawTBSCertificate)
	if err != nil {
		return nil, fmt.Errorf("ca: prepare: %w", err)
	}
	digest, _, err := tbsDigest(lc.RawTBSCertificate, lc.SignatureAlgorithm)
	if err != nil {
		return nil, fmt.Errorf("ca: prepare: %w", err)
	}
	if outer, err := certificateAlgID(lc.Raw); err != nil || !bytes.Equal(outer, algID) {
		return nil, fmt.Errorf("ca: prepare: the lint certificate's signature algorithm differs from its TBSCertificate's")
	}
	return &Prepared{tmpl: tmpl, pub: pub, tbs: lc.RawTBSCertificate, name: name,
		issuer: i, sigAlg: lc.SignatureAlgorithm, algID: algID, digest: digest, lc: lc}, nil
}

// tbsDigest returns what the issuing key signs for tbs under alg, and the
// signer options.
func tbsDigest(tbs []byte, alg x509.SignatureAlgorithm) ([]byte, crypto.SignerOpts, error) {
	var h crypto.Hash
	switch alg {
	case x509.ECDSAWithSHA256, x509.SHA256WithRSA:
		h = crypto.SHA256
	case x509.ECDSAWithSHA384, x509.SHA384WithRSA:
		h = crypto.SHA384
	case x509.ECDSAWithSHA512, x509.SHA512WithRSA:
		h = crypto.SHA512
	case x509.PureEd25519:
		return tbs, crypto.Hash(0), nil
	default:
		return nil, nil, fmt.Errorf("signature algorithm %v not supported", alg)
	}
	hh := h.New()
	hh.Write(tbs)
	return hh.Sum(nil), h, nil
}

// tbsSignatureAlgorithm returns the DER AlgorithmIdentifier in tbs's
// signature field, which the certificate repeats outside the TBS.
func tbsSignatureAlgorithm(tbs []byte) ([]byte, error) {
	in := cryptobyte.String(tbs)
	var t cryptobyte.String
	var alg cryptobyte.String
	if !in.ReadASN1(&t, cbasn1.SEQUENCE) || !in.Empty() ||
		!t.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!t.SkipASN1(cbasn1.INTEGER) ||
		!t.ReadASN1Element(&alg, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed TBSCertificate")
	}
	return []byte(alg), nil
}

// certificateAlgID returns the DER signatureAlgorithm of a certificate
// (the one outside its TBSCertificate).
func certificateAlgID(der []byte) ([]byte, error) {
	in := cryptobyte.String(der)
	var c cryptobyte.String
	var alg cryptobyte.String
	if !in.ReadASN1(&c, cbasn1.SEQUENCE) || !in.Empty() ||
		!c.SkipASN1(cbasn1.SEQUENCE) ||
		!c.ReadASN1Element(&alg, cbasn1.SEQUENCE) {
		return nil, errors.New("malformed certificate")
	}
	return []byte(alg), nil
}

// selfTest runs one throwaway issuance through the lint path with a fresh
// P-256 key, at the start of the issuing certificate's validity. The same
// leaf, signed with the lint key by x509.CreateCertificate and linted, comes
// first: it gives the issuer's signature algorithm and the lint
// certificates' placeholder signature (leafSig), and its TBSCertificate is
// the one leafTBS must encode, byte for byte.
func (i *Issuer) selfTest() error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating self-test key: %w", err)
	}
	serial, err := NewSerial(rand.Reader)
	if err != nil {
		return err
	}
	const name = "atr-self-test"
	now := i.cert.NotBefore.Add(i.profile.Backdate)
	tmpl, err := i.leafTemplate(k.Public(), name, serial, now)
	if err != nil {
		return err
	}
	lc, err := i.lintTemplate(tmpl, k.Public(), name)
	if err != nil {
		return err
	}
	if err := i.learnLeafSignature(lc); err != nil {
		return err
	}
	p, err := i.prepare(k.Public(), name, serial, now)
	if err != nil {
		return err
	}
	if !bytes.Equal(p.tbs, lc.RawTBSCertificate) {
		return errors.New("ATR's leaf encoder (leafTBS) and crypto/x509 encode the self-test leaf differently: this build cannot issue")
	}
	return nil
}

// newLintKey generates a throwaway key with the same algorithm and size as
// pub, so that the lint certificate's signature algorithm (part of the TBS)
// matches the real issuer's.
func newLintKey(pub crypto.PublicKey) (crypto.Signer, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		s, err := ecdsa.GenerateKey(k.Curve, rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating lint key: %w", err)
		}
		return s, nil
	case *rsa.PublicKey:
		s, err := rsa.GenerateKey(rand.Reader, k.N.BitLen())
		if err != nil {
			return nil, fmt.Errorf("generating lint key: %w", err)
		}
		return s, nil
	case ed25519.PublicKey:
		_, s, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating lint key: %w", err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("issuing key type %T not supported", pub)
	}
}

// newLintIssuerCert self-signs, with the lint key, a CA certificate with the
// issuing certificate's exact subject (RawSubject) and subject key
// identifier.
func newLintIssuerCert(issuer *x509.Certificate, lintKey crypto.Signer) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		RawSubject:            issuer.RawSubject,
		SubjectKeyId:          issuer.SubjectKeyId,
		NotBefore:             issuer.NotBefore,
		NotAfter:              issuer.NotAfter,
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, lintKey.Public(), lintKey)
	if err != nil {
		return nil, fmt.Errorf("creating lint issuer certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing lint issuer certificate: %w", err)
	}
	if !bytes.Equal(c.RawSubject, issuer.RawSubject) || !bytes.Equal(c.SubjectKeyId, issuer.SubjectKeyId) {
		return nil, errors.New("lint issuer certificate does not mirror the issuing certificate")
	}
	return c, nil
}

// subjectKeyID computes the key identifier of RFC 7093 section 2 method 1:
// the leftmost 160 bits of the SHA-256 hash of the subjectPublicKey BIT
// STRING value.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: marshalling public key: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(spki, &info); err != nil || len(rest) != 0 {
		return nil, errors.New("ca: parsing marshalled public key")
	}
	sum := sha256.Sum256(info.PublicKey.Bytes)
	return sum[:20], nil
}

// checkPermitsTrustDomain checks that cert's URI name constraints, if any,
// permit spiffe://td.
func checkPermitsTrustDomain(cert *x509.Certificate, td string) error {
	for _, ex := range cert.ExcludedURIDomains {
		if uriDomainMatches(ex, td) {
			return fmt.Errorf("issuing certificate excludes URI domain %q", td)
		}
	}
	if len(cert.PermittedURIDomains) == 0 {
		return nil
	}
	for _, p := range cert.PermittedURIDomains {
		if uriDomainMatches(p, td) {
			return nil
		}
	}
	return fmt.Errorf("issuing certificate's name constraints do not permit URI domain %q", td)
}

// uriDomainMatches applies RFC 5280's URI constraint rule: a constraint
// starting with "." matches subdomains, otherwise the host exactly.
func uriDomainMatches(constraint, host string) bool {
	constraint = strings.ToLower(constraint)
	if len(constraint) > 0 && constraint[0] == '.' {
		return len(host) > len(constraint) && host[len(host)-len(constraint):] == constraint
	}
	return constraint == host
}
