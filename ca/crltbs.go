package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// A CRL's TBSCertList, encoded here rather than by
// x509.CreateRevocationList, whose encoding/asn1 reflects over every entry:
// at 20,000 entries that was 3.6 µs an entry, nearly half of a CRL's
// making (docs/performance.md, "What a CRL costs"). crlTBS encodes what
// CreateRevocationList writes for SignCRL's CRLs — version 2, the issuer's
// raw subject, thisUpdate and nextUpdate, each entry's serial, time and
// (unless unspecified) reason code, then the authority key identifier and
// the CRL number — field for field, in its order, as leafTBS does for
// leaves.
//
// A Responder uses it only after it checked it: its first CRL with entries
// is made by CreateRevocationList, and once crlTBS encoded that CRL's
// TBSCertList byte for byte, the signature algorithm it names is the one
// crlSignatureAlgorithm gives for the key, and that CRL's signature
// verifies with the hash crlSignatureAlgorithm pairs with it, every later
// CRL is encoded here (learnCRLEncoding). A Go release that writes CRLs differently keeps
// the Responder on CreateRevocationList. TestCRLTBSMatchesCreateRevocationList
// and FuzzCRLTBS compare the two encodings for every CA key type.

var (
	oidCRLNumber = asn1.ObjectIdentifier{2, 5, 29, 20}
	oidCRLReason = asn1.ObjectIdentifier{2, 5, 29, 21}

	tagCRLExtensions = cbasn1.Tag(0).Constructed().ContextSpecific()
)

// crlSignature is the signature algorithm CreateRevocationList uses for a
// key: its x509 constant and its DER AlgorithmIdentifier.
type crlSignature struct {
	sigAlg x509.SignatureAlgorithm
	algID  []byte
}

// crlSignatureAlgorithm returns the signature algorithm
// x509.CreateRevocationList picks for pub when the template names none:
// ECDSA with the curve's hash, SHA-256 with RSA (PKCS #1 v1.5), Ed25519.
func crlSignatureAlgorithm(pub crypto.PublicKey) (crlSignature, error) {
	var (
		alg    x509.SignatureAlgorithm
		oid    asn1.ObjectIdentifier
		params bool // an explicit NULL, as RSA's PKCS #1 v1.5 identifiers carry
	)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			alg, oid = x509.ECDSAWithSHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
		case elliptic.P384():
			alg, oid = x509.ECDSAWithSHA384, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
		case elliptic.P521():
			alg, oid = x509.ECDSAWithSHA512, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
		default:
			return crlSignature{}, errors.New("ECDSA curve not supported")
		}
	case *rsa.PublicKey:
		alg, oid, params = x509.SHA256WithRSA, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, true
	case ed25519.PublicKey:
		alg, oid = x509.PureEd25519, asn1.ObjectIdentifier{1, 3, 101, 112}
	default:
		return crlSignature{}, fmt.Errorf("key type %T not supported", pub)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if params {
			b.AddASN1NULL()
		}
	})
	algID, err := b.Bytes()
	if err != nil {
		return crlSignature{}, err
	}
	return crlSignature{sigAlg: alg, algID: algID}, nil
}

// crlTBS returns the DER TBSCertList x509.CreateRevocationList writes for
// a CRL of the CA whose raw subject is issuer and subject key identifier
// akid, signed with the algorithm algID, with CRL number number (positive),
// thisUpdate, nextUpdate and entries (each with a positive serial, a
// revocation time and a reason code; 0, unspecified, is not encoded). The
// caller checks the values (SignCRL).
func crlTBS(algID, issuer, akid []byte, number *big.Int, thisUpdate, nextUpdate time.Time, entries []x509.RevocationListEntry) ([]byte, error) {
	// ~40 bytes an entry with its reason: one buffer, grown at most once.
	b := cryptobyte.NewBuilder(make([]byte, 0, 256+len(issuer)+48*len(entries)))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(1) // v2
		b.AddBytes(algID)
		b.AddBytes(issuer)
		addASN1Time(b, thisUpdate)
		addASN1Time(b, nextUpdate)
		if len(entries) > 0 {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for k := range entries {
					addCRLEntry(b, &entries[k])
				}
			})
		}
		b.AddASN1(tagCRLExtensions, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addExtension(b, leafOIDAuthorityKeyID, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(tagKeyID, func(b *cryptobyte.Builder) { b.AddBytes(akid) })
					})
				})
				addExtension(b, oidCRLNumber, false, func(b *cryptobyte.Builder) { b.AddASN1BigInt(number) })
			})
		})
	})
	return b.Bytes()
}

// addCRLEntry adds one revokedCertificates entry: serial, revocation time
// and, unless the reason is unspecified, the reason code extension.
func addCRLEntry(b *cryptobyte.Builder, e *x509.RevocationListEntry) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(e.SerialNumber)
		addASN1Time(b, e.RevocationTime)
		if e.ReasonCode != 0 {
			if e.ReasonCode < 0 || e.ReasonCode >= len(crlReasonExtensions) {
				b.SetError(fmt.Errorf("reason code %d not encoded", e.ReasonCode))
				return
			}
			b.AddBytes(crlReasonExtensions[e.ReasonCode])
		}
	})
}

// crlReasonExtensions holds, for each reason code from 1 to 10, an entry's
// crlEntryExtensions with that reason code: the same bytes for every entry
// of a code, encoded once.
var crlReasonExtensions = func() [11][]byte {
	var out [11][]byte
	for code := 1; code < len(out); code++ {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addExtension(b, oidCRLReason, false, func(b *cryptobyte.Builder) { b.AddASN1Enum(int64(code)) })
		})
		out[code] = b.BytesOrPanic()
	}
	return out
}()

// crlParts returns the TBSCertList, the signature AlgorithmIdentifier and
// the signature of a DER CRL, unparsed.
func crlParts(der []byte) (tbs, algID, signature []byte, err error) {
	in := cryptobyte.String(der)
	var list cryptobyte.String
	var t, a cryptobyte.String
	var sig asn1.BitString
	if !in.ReadASN1(&list, cbasn1.SEQUENCE) || !in.Empty() ||
		!list.ReadASN1Element(&t, cbasn1.SEQUENCE) ||
		!list.ReadASN1Element(&a, cbasn1.SEQUENCE) ||
		!list.ReadASN1BitString(&sig) || !list.Empty() || sig.BitLength%8 != 0 {
		return nil, nil, nil, errors.New("malformed CRL")
	}
	return t, a, sig.Bytes, nil
}

// learnCRLEncoding checks crlTBS against der, the CRL
// x509.CreateRevocationList made of these values with r's key: when the
// TBSCertList and the signature algorithm are the same bytes, and der's
// signature verifies under the CA certificate with the algorithm
// crlSignatureAlgorithm pairs with them (so the hash signCRLEncoded will
// use is the one the identifier names), r's later CRLs are encoded by
// crlTBS. Only a CRL with entries teaches it (one without would leave their
// encoding unchecked).
func (r *Responder) learnCRLEncoding(der []byte, number *big.Int, thisUpdate, nextUpdate time.Time, entries []x509.RevocationListEntry) {
	if len(entries) == 0 || len(r.cert.RawSubject) == 0 {
		return
	}
	sig, err := crlSignatureAlgorithm(r.signer.Public())
	if err != nil {
		return
	}
	tbs, algID, signature, err := crlParts(der)
	if err != nil || !bytes.Equal(algID, sig.algID) || r.cert.CheckSignature(sig.sigAlg, tbs, signature) != nil {
		return
	}
	ours, err := crlTBS(sig.algID, r.cert.RawSubject, r.cert.SubjectKeyId, number, thisUpdate, nextUpdate, entries)
	if err != nil || !bytes.Equal(ours, tbs) {
		return
	}
	r.crlEnc.Store(&sig)
}

// signCRLEncoded signs the CRL crlTBS encodes with the algorithm sig, which
// learnCRLEncoding checked, and checks the signature under the CA's key
// (the signer does when it is a SelfCheckingSigner), as
// CreateRevocationList does.
func (r *Responder) signCRLEncoded(sig *crlSignature, number *big.Int, thisUpdate, nextUpdate time.Time, entries []x509.RevocationListEntry) ([]byte, error) {
	tbs, err := crlTBS(sig.algID, r.cert.RawSubject, r.cert.SubjectKeyId, number, thisUpdate, nextUpdate, entries)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: encoding: %w", err)
	}
	digest, opts, err := tbsDigest(tbs, sig.sigAlg)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	s, err := r.signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	if _, ok := r.signer.(SelfCheckingSigner); !ok {
		if err := r.cert.CheckSignature(sig.sigAlg, tbs, s); err != nil {
			return nil, fmt.Errorf("ca: sign CRL: the signer's signature does not verify under the CA certificate: %w", err)
		}
	}
	der, err := certificateDER(tbs, sig.algID, s) // a CertificateList has a Certificate's shape
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: encoding: %w", err)
	}
	return der, nil
}
