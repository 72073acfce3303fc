-- The root CRLs' own revision (registry/arl.go). revocation_state.seq moves
-- with every revocation and rotation; root_crl_seq only when a root CRL is
-- published (both in the same transaction), so that a replica reads the
-- root CRLs again only when there is a new one, and learns that there is
-- none from the same row it reads the revision from.
ALTER TABLE revocation_state ADD COLUMN root_crl_seq INTEGER NOT NULL DEFAULT 0;
UPDATE revocation_state SET root_crl_seq = (SELECT COUNT(*) FROM root_crls) WHERE id = 1;

CREATE TRIGGER root_crls_root_crl_seq_insert
AFTER INSERT ON root_crls
FOR EACH ROW
BEGIN
    UPDATE revocation_state SET root_crl_seq = root_crl_seq + 1 WHERE id = 1;
END;
