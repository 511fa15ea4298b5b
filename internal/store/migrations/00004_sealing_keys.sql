-- The ids of the encryption keys that sealed stored values, so a start can
-- check that each is configured without reading every row. A sealed value
-- reads "mmc1.<8 hex digits of key id>.<ciphertext>".

-- +goose Up
CREATE TABLE sealing_keys (
    key_id TEXT NOT NULL PRIMARY KEY
);
INSERT INTO sealing_keys (key_id)
    SELECT DISTINCT substr(sealed_token, 6, 8) FROM connections WHERE sealed_token IS NOT NULL
    UNION
    SELECT DISTINCT substr(sealed_token, 6, 8) FROM pending_revocations;

-- +goose Down
DROP TABLE sealing_keys;
