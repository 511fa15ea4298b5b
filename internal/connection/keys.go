package connection

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// MissingKeysError: stored values were sealed with keys that are not
// configured, so their tokens cannot be opened.
type MissingKeysError struct {
	KeyIDs []string
}

func (e *MissingKeysError) Error() string {
	return fmt.Sprintf("stored tokens were sealed with encryption key id(s) %s, which are not configured: "+
		"restore the key (data/encryption-key from your backup, or add it to MMCONNECT_ENCRYPTION_KEYS) before starting",
		strings.Join(e.KeyIDs, ", "))
}

// CheckSealingKeys refuses to go on when stored values were sealed with a
// key id not among configured. It reads only the small table of key ids
// in use. Errors: *MissingKeysError, ErrUnavailable.
func (s *Service) CheckSealingKeys(ctx context.Context, configured []string) error {
	stored, err := s.store.SealingKeyIDs(ctx)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, id := range configured {
		have[id] = true
	}
	var missing []string
	for _, id := range stored {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return &MissingKeysError{KeyIDs: missing}
	}
	return nil
}

// RotateKeys re-seals every stored token (of connections and of pending
// revocations) that is not sealed with the primary key, batch values at a
// time, while the service keeps serving: each re-seal is conditional on
// the value being unchanged, and bumps a connection's generation, so a
// concurrent reconnect or revoke wins and a check that read the row before
// cannot write anything back. A value changed meanwhile is skipped (it was
// re-sealed by its writer). Running it again resumes. It returns how many
// values it re-sealed and how many each key id still seals.
// Errors: ErrSealingKeyMissing (a value no configured key opens),
// ErrUnavailable.
func (s *Service) RotateKeys(ctx context.Context, batch int) (resealed int, use map[string]int64, err error) {
	primary := s.sealer.Primary()
	after := ""
	for {
		vals, err := s.store.SealedAfter(ctx, after, batch)
		if err != nil {
			return resealed, nil, err
		}
		for _, v := range vals {
			after = v.ID
			if s.sealer.SealedWith(v.Value) == primary {
				continue
			}
			plain, err := s.sealer.Open(v.Value, []byte(v.ID))
			if err != nil {
				return resealed, nil, fmt.Errorf("open the token of %s: %w", v.ID, err)
			}
			sealed, err := s.sealer.Seal(plain, []byte(v.ID))
			if err != nil {
				return resealed, nil, err
			}
			err = s.store.Reseal(ctx, v, sealed, primary, Truncate(s.now()))
			switch {
			case errors.Is(err, ErrConflict):
			case err != nil:
				return resealed, nil, err
			default:
				resealed++
			}
		}
		if len(vals) < batch {
			break
		}
	}
	use, err = s.store.SealingKeyUse(ctx)
	return resealed, use, err
}
