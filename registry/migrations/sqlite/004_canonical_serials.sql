-- Serial numbers get one canonical spelling (ca.FormatSerial): lowercase hex
-- with two digits per byte, so an even number of digits, as openssl prints
-- them. Rows written before this migration used big.Int.Text(16), which drops
-- a leading zero nibble (about 1 serial in 16). Prepending "0" to an odd-length
-- spelling gives the canonical one; no two rows can collide (equal spellings
-- would be equal serials). Only serial columns change, so the revocation
-- triggers (which watch status and revocation columns) do not fire.
UPDATE certificates SET serial = '0' || serial WHERE length(serial) % 2 = 1;
UPDATE certificates SET predecessor_serial = '0' || predecessor_serial WHERE length(predecessor_serial) % 2 = 1;
UPDATE certificates SET successor_serial = '0' || successor_serial WHERE length(successor_serial) % 2 = 1;
UPDATE agents SET current_serial = '0' || current_serial WHERE length(current_serial) % 2 = 1;
UPDATE pending_issuances SET serial = '0' || serial WHERE length(serial) % 2 = 1;
UPDATE ocsp_responses SET serial = '0' || serial WHERE length(serial) % 2 = 1;
