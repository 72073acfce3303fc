package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The agent leaf's TBSCertificate, encoded here rather than by
// x509.CreateCertificate. CreateCertificate has no way to encode a
// certificate without signing it, and it checks the signature it made: for
// the lint certificate of every issuance that was an ECDSA signature with
// the throwaway lint key and its verification — a third of Prepare, 0.1 ms
// of CPU per issuance (docs/performance-history.md, thirteenth pass) — for a
// signature nobody uses. leafTBS encodes what leafTemplate builds, field
// for field and extension for extension in the order x509.CreateCertificate
// writes them, and refuses a template with anything else set. Two checks
// keep the encodings equal: NewIssuer encodes its self-test leaf both ways
// and refuses to start if the bytes differ (a Go release that changed its
// encoding), and TestLeafTBSMatchesCreateCertificate compares them for
// every issuing key type, profile and validity encoding. The TBS is then
// linted whole, as before, and signed by the token byte for byte.

var (
	leafOIDKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	leafOIDExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	leafOIDBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	leafOIDSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	leafOIDAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	leafOIDAuthorityInfo    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	leafOIDAccessOCSP       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1}
	leafOIDSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	leafOIDCRLDistribution  = asn1.ObjectIdentifier{2, 5, 29, 31}

	leafOIDEKUServerAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	leafOIDEKUClientAuth = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// GeneralName tags (RFC 5280, section 4.2.1.6) and the context-specific
// tags of the TBSCertificate and its extensions.
var (
	tagURI          = cbasn1.Tag(6).ContextSpecific()
	tagVersion      = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagExtensions   = cbasn1.Tag(3).Constructed().ContextSpecific()
	tagKeyID        = cbasn1.Tag(0).ContextSpecific()
	tagDPName       = cbasn1.Tag(0).Constructed().ContextSpecific()
	tagDPFullName   = cbasn1.Tag(0).Constructed().ContextSpecific()
	emptyASN1Name   = []byte{0x30, 0x00}
	errLeafTemplate = errors.New("ca: leaf encoder: the template sets fields leafTBS does not encode")
)

// leafTBS returns the DER TBSCertificate of tmpl, a leafTemplate over the
// public key whose DER SubjectPublicKeyInfo is spki, under the lint issuer
// (whose subject and key identifier are the issuing certificate's) with the
// issuer's signature algorithm algID: the bytes x509.CreateCertificate
// writes for it.
func (i *Issuer) leafTBS(tmpl *x509.Certificate, spki, algID []byte) ([]byte, error) {
	if err := checkLeafTemplate(tmpl); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(tagVersion, func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(tmpl.SerialNumber)
		b.AddBytes(algID)
		b.AddBytes(i.lintCert.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addASN1Time(b, tmpl.NotBefore)
			addASN1Time(b, tmpl.NotAfter)
		})
		b.AddBytes(emptyASN1Name)
		b.AddBytes(spki)
		b.AddASN1(tagExtensions, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				i.addLeafExtensions(b, tmpl)
			})
		})
	})
	return b.Bytes()
}

// addLeafExtensions adds the extensions of a leaf template in
// x509.CreateCertificate's order: key usage, extended key usage, basic
// constraints, subject and authority key identifiers, authority
// information access, subject alternative name (critical: the subject is
// empty), CRL distribution points.
func (i *Issuer) addLeafExtensions(b *cryptobyte.Builder, tmpl *x509.Certificate) {
	if tmpl.KeyUsage != 0 {
		addExtension(b, leafOIDKeyUsage, true, func(b *cryptobyte.Builder) { addKeyUsage(b, tmpl.KeyUsage) })
	}
	if len(tmpl.ExtKeyUsage) > 0 {
		addExtension(b, leafOIDExtKeyUsage, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.ExtKeyUsage {
					switch u {
					case x509.ExtKeyUsageClientAuth:
						b.AddASN1ObjectIdentifier(leafOIDEKUClientAuth)
					case x509.ExtKeyUsageServerAuth:
						b.AddASN1ObjectIdentifier(leafOIDEKUServerAuth)
					default:
						b.SetError(fmt.Errorf("ca: leaf encoder: extended key usage %v not encoded", u))
					}
				}
			})
		})
	}
	if tmpl.BasicConstraintsValid {
		// Not a CA, no path length: an empty SEQUENCE (DER omits defaults).
		addExtension(b, leafOIDBasicConstraints, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
		})
	}
	if len(tmpl.SubjectKeyId) > 0 {
		addExtension(b, leafOIDSubjectKeyID, false, func(b *cryptobyte.Builder) { b.AddASN1OctetString(tmpl.SubjectKeyId) })
	}
	if akid := i.lintCert.SubjectKeyId; len(akid) > 0 {
		addExtension(b, leafOIDAuthorityKeyID, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(tagKeyID, func(b *cryptobyte.Builder) { b.AddBytes(akid) })
			})
		})
	}
	if len(tmpl.OCSPServer) > 0 {
		addExtension(b, leafOIDAuthorityInfo, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.OCSPServer {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(leafOIDAccessOCSP)
						addIA5(b, tagURI, u)
					})
				}
			})
		})
	}
	if len(tmpl.URIs) > 0 {
		addExtension(b, leafOIDSubjectAltName, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.URIs {
					addIA5(b, tagURI, u.String())
				}
			})
		})
	}
	if len(tmpl.CRLDistributionPoints) > 0 {
		addExtension(b, leafOIDCRLDistribution, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.CRLDistributionPoints {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(tagDPName, func(b *cryptobyte.Builder) {
							b.AddASN1(tagDPFullName, func(b *cryptobyte.Builder) { addIA5(b, tagURI, u) })
						})
					})
				}
			})
		})
	}
}

// addExtension adds one Extension: its OID, critical when it is (DER omits
// FALSE), and the value value adds, as an OCTET STRING.
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addKeyUsage adds the key usage BIT STRING: bit n is usage 1<<n, trailing
// zero bits dropped (DER), as x509.CreateCertificate encodes it.
func addKeyUsage(b *cryptobyte.Builder, ku x509.KeyUsage) {
	if ku <= 0 || ku > x509.KeyUsageDecipherOnly<<1-1 {
		b.SetError(fmt.Errorf("ca: leaf encoder: key usage %#x not encoded", int(ku)))
		return
	}
	v := []byte{bits.Reverse8(byte(ku)), bits.Reverse8(byte(ku >> 8))}
	if v[1] == 0 {
		v = v[:1]
	}
	unused := bits.TrailingZeros8(v[len(v)-1])
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
		b.AddUint8(uint8(unused))
		b.AddBytes(v)
	})
}

// addIA5 adds s as an IA5String under tag, refusing anything else (as
// x509.CreateCertificate does).
func addIA5(b *cryptobyte.Builder, tag cbasn1.Tag, s string) {
	for k := 0; k < len(s); k++ {
		if s[k] > 0x7f {
			b.SetError(fmt.Errorf("ca: leaf encoder: %q is not an IA5String", s))
			return
		}
	}
	b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

// addASN1Time adds t as encoding/asn1 writes a time.Time (which
// x509.CreateCertificate's validity uses): UTCTime from 1950 to 2049,
// GeneralizedTime outside, in UTC, whole seconds.
func addASN1Time(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

// checkLeafTemplate refuses a template that sets anything leafTBS does not
// encode: it must hold what leafTemplate builds and nothing else.
func checkLeafTemplate(tmpl *x509.Certificate) error {
	if tmpl == nil || tmpl.SerialNumber == nil || tmpl.IsCA || !tmpl.BasicConstraintsValid {
		return errLeafTemplate
	}
	known := x509.Certificate{
		SerialNumber:          tmpl.SerialNumber,
		NotBefore:             tmpl.NotBefore,
		NotAfter:              tmpl.NotAfter,
		URIs:                  tmpl.URIs,
		KeyUsage:              tmpl.KeyUsage,
		ExtKeyUsage:           tmpl.ExtKeyUsage,
		BasicConstraintsValid: true,
		SubjectKeyId:          tmpl.SubjectKeyId,
		CRLDistributionPoints: tmpl.CRLDistributionPoints,
		OCSPServer:            tmpl.OCSPServer,
	}
	if !reflect.DeepEqual(&known, tmpl) {
		return errLeafTemplate
	}
	return nil
}

// certificateDER assembles a Certificate from its TBSCertificate, the
// signature AlgorithmIdentifier the TBS names (algID) and a signature.
func certificateDER(tbs, algID, sig []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(algID)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// leafSignature is what NewIssuer learns once from a certificate that
// x509.CreateCertificate signed with the lint key: the issuer's signature
// algorithm as it appears in a TBS, and a signature of the lint key (over
// other bytes) that stands in the lint certificate: shaped like the real
// one, verifying nothing. No lint reads it (the lint sources ATR uses check
// no leaf signature), and the certificate that leaves the CA carries the
// token's.
type leafSignature struct {
	sigAlg      x509.SignatureAlgorithm
	algID       []byte
	placeholder []byte
}

// learnLeafSignature fills i.leafSig from lc, a leaf CreateCertificate
// signed with the lint key.
func (i *Issuer) learnLeafSignature(lc *x509.Certificate) error {
	algID, err := tbsSignatureAlgorithm(lc.RawTBSCertificate)
	if err != nil {
		return err
	}
	i.leafSig = leafSignature{sigAlg: lc.SignatureAlgorithm, algID: algID, placeholder: bytes.Clone(lc.Signature)}
	return nil
}

// spkiOf returns the DER SubjectPublicKeyInfo of pub.
func spkiOf(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("ca: prepare: encoding the public key: %w", err)
	}
	return spki, nil
}
