package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/mmconnect/mmconnect/internal/connection"
)

// batcher is SQLite's group commit: it runs the write transactions of
// concurrent callers in one SQLite transaction, each caller's writes in a
// savepoint of its own (rolled back alone if they fail), with one COMMIT,
// one fsync, per batch. A caller is answered only after the commit that
// holds its writes. Batches form by themselves: while one commits, the
// next callers queue, and the next batch takes them all.
type batcher struct {
	db *gorm.DB // the one writer connection
	// savepoint and rollbackTo open and undo one caller's writes. Every
	// savepoint has the same name: SQLite rolls back to the most recent
	// of that name, which is always the current caller's, so the two
	// statements are prepared once rather than once per name.
	savepoint, rollbackTo *writeStmt
	// cache is the row cache each batch tells which rows it changed, as
	// log (the writer's update hook) noted them; nil without a cache.
	cache   *rowCache
	log     *changeLog
	reqs    chan *writeReq
	mu      sync.RWMutex
	closed  bool
	stopped chan struct{}

	// For the operators' metrics: batches committed, writes they held, and
	// the time spent running and committing them.
	batches, writes atomic.Uint64
	busy            atomic.Int64
}

// BatchStats are the group commit's running totals since the store opened.
// Writes/Batches is the mean batch size; Busy/Batches the mean time the one
// writer spends on a batch (its writes, COMMIT and fsync).
type BatchStats struct {
	Batches, Writes uint64
	Busy            time.Duration
}

// WriteBatchStats returns the group commit's totals, and false on
// PostgreSQL, where writers do not batch.
func (s *Store) WriteBatchStats() (BatchStats, bool) {
	if s.batch == nil {
		return BatchStats{}, false
	}
	return BatchStats{Batches: s.batch.batches.Load(), Writes: s.batch.writes.Load(), Busy: time.Duration(s.batch.busy.Load())}, true
}

type writeReq struct {
	ctx  context.Context
	fn   func(tx *gorm.DB) error
	done chan error
}

// maxBatch bounds how many callers' writes one transaction holds.
const maxBatch = 128

func newBatcher(db *gorm.DB, savepoint, rollbackTo *writeStmt, cache *rowCache, log *changeLog) *batcher {
	b := &batcher{db: db, savepoint: savepoint, rollbackTo: rollbackTo, cache: cache, log: log,
		reqs: make(chan *writeReq, maxBatch), stopped: make(chan struct{})}
	go b.run()
	return b
}

// write runs fn in a savepoint of the next batch and returns once that
// batch committed. Errors: fn's, the commit's, connection.ErrUnavailable
// once closed, ctx's when it ends before the write is taken up.
func (b *batcher) write(ctx context.Context, fn func(tx *gorm.DB) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("write after close: %w", connection.ErrUnavailable)
	}
	b.reqs <- r
	b.mu.RUnlock()
	return <-r.done
}

func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	close(b.reqs)
	b.mu.Unlock()
	<-b.stopped
}

func (b *batcher) run() {
	defer close(b.stopped)
	for first := range b.reqs {
		batch := []*writeReq{first}
	collect:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-b.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect
			}
		}
		b.commit(batch)
	}
}

func (b *batcher) commit(batch []*writeReq) {
	start := time.Now()
	results := make([]error, len(batch))
	tx := b.db.Begin()
	if tx.Error != nil {
		for i := range results {
			results[i] = tx.Error
		}
		b.answer(batch, results, start)
		return
	}
	own := b.cache.beginWrite(b.log)
	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		// Not cancelable once started: SQLite answers an interrupted write
		// inside a transaction by rolling the whole transaction back, which
		// would fail every other caller in the batch.
		wtx := tx.WithContext(context.WithoutCancel(r.ctx))
		if err := b.savepoint.exec(wtx); err != nil {
			results[i] = err
			continue
		}
		if err := r.fn(wtx); err != nil {
			results[i] = err
			if rerr := b.rollbackTo.exec(wtx); rerr != nil {
				// The transaction cannot go on: everyone in it fails.
				tx.Rollback()
				own.end(nil, false)
				for j := range batch {
					if results[j] == nil || j == i {
						results[j] = fmt.Errorf("roll back a failed write: %w", rerr)
					}
				}
				b.answer(batch, results, start)
				return
			}
		}
	}
	ids, exact := own.changed(tx)
	err := tx.Commit().Error
	own.end(ids, exact && err == nil)
	if err != nil {
		for i := range results {
			if results[i] == nil {
				results[i] = err
			}
		}
	}
	b.answer(batch, results, start)
}

// answer counts the batch, begun at start, for the operators' metrics,
// then gives each caller its result: counted first, so that a caller who
// has its answer finds its batch in the metrics.
func (b *batcher) answer(batch []*writeReq, results []error, start time.Time) {
	b.batches.Add(1)
	b.writes.Add(uint64(len(batch)))
	b.busy.Add(int64(time.Since(start)))
	for i, r := range batch {
		r.done <- results[i]
	}
}

// tx runs fn as one write transaction: on SQLite in the group commit, on
// PostgreSQL (where writers run in parallel) as a transaction of its own.
func (s *Store) tx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	if s.batch != nil {
		return s.batch.write(ctx, fn)
	}
	return s.db.WithContext(ctx).Transaction(fn)
}

// exec runs the one statement write makes on the db it is given as one
// write (single), and returns the rows it affected. On SQLite that is the
// group commit, whose commits tell the row cache which rows they changed;
// a commit outside it (a pruning pass, the retired-key sweep) makes every
// cached row stale. Errors: the statement's.
func (s *Store) exec(ctx context.Context, write func(db *gorm.DB) *gorm.DB) (int64, error) {
	var n int64
	err := s.single(ctx, func(db *gorm.DB) error {
		res := write(db)
		n = res.RowsAffected
		return res.Error
	})
	return n, err
}

// single runs fn, which makes one statement, as one write: on SQLite in
// the group commit, as tx does; on PostgreSQL on its own, since one
// statement needs no BEGIN and COMMIT around it, which are two round
// trips more.
func (s *Store) single(ctx context.Context, fn func(db *gorm.DB) error) error {
	if s.batch != nil {
		return s.batch.write(ctx, fn)
	}
	return fn(s.db.WithContext(ctx))
}
