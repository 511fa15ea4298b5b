package webhook

import "encoding/base64"

// base64Std decodes standard base64, padded or not, as secrets are written
// by different tools.
func base64Std(s string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}
