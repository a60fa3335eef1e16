package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// snapshot returns every record of table as id -> name, and the ids its
// unique email index resolves.
func snapshot(t *testing.T, s *Store, table string) (map[string]string, map[string]string) {
	t.Helper()
	recs, emails := map[string]string{}, map[string]string{}
	err := s.View(context.Background(), func(tx *Txn) error {
		return tx.List(table, Query{}, func(id string, decode func(any) error) error {
			var u user
			if err := decode(&u); err != nil {
				return err
			}
			recs[id] = u.Name
			if u.Email != "" {
				got, err := tx.Lookup(table, "email", u.Email)
				if err != nil {
					return fmt.Errorf("lookup %s: %w", u.Email, err)
				}
				emails[u.Email] = got
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, emails
}

// TestBackupLoad backs up an encrypted store (records, indexes, a deleted
// and an overwritten record) and loads it into a fresh store with another
// key: the same records, the same index answers, and the store works on.
func TestBackupLoad(t *testing.T) {
	src, err := openWith(t, t.TempDir(), newKey(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := fmt.Sprintf("%03d", i)
		if err := put(t, src, "users", id, user{Name: "n" + id, Email: id + "@x"}, Index{Name: "email", Value: id + "@x", Unique: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Update(context.Background(), func(tx *Txn) error { return tx.Delete("users", "003") }); err != nil {
		t.Fatal(err)
	}
	if err := put(t, src, "users", "004", user{Name: "renamed", Email: "new@x"}, Index{Name: "email", Value: "new@x", Unique: true}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.Backup(context.Background(), &buf); err != nil {
		t.Fatalf("Backup: %v", err)
	}
	// the stream is in the clear: whoever stores it must encrypt it
	if !bytes.Contains(buf.Bytes(), []byte("renamed")) {
		t.Errorf("backup stream does not hold the record data")
	}

	dst, err := openWith(t, t.TempDir(), newKey(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Load(context.Background(), bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatalf("Load: %v", err)
	}
	wantRecs, wantEmails := snapshot(t, src, "users")
	gotRecs, gotEmails := snapshot(t, dst, "users")
	if fmt.Sprint(gotRecs) != fmt.Sprint(wantRecs) || fmt.Sprint(gotEmails) != fmt.Sprint(wantEmails) {
		t.Fatalf("after load:\nrecords %v\nemails %v\nwant\nrecords %v\nemails %v", gotRecs, gotEmails, wantRecs, wantEmails)
	}
	if _, ok := gotRecs["003"]; ok || len(gotRecs) != 19 {
		t.Fatalf("records after load: %v", gotRecs)
	}
	if _, err := lookup(t, dst, "users", "email", "004@x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stale index entry of 004 after load: %v", err)
	}
	// the unique index still guards, and new writes land after the loaded ones
	if err := put(t, dst, "users", "100", user{Email: "001@x"}, Index{Name: "email", Value: "001@x", Unique: true}); !errors.Is(err, ErrExists) {
		t.Errorf("unique clash after load: %v, want ErrExists", err)
	}
	if err := put(t, dst, "users", "004", user{Name: "again"}); err != nil {
		t.Fatal(err)
	}
	if u, err := get(t, dst, "users", "004"); err != nil || u.Name != "again" {
		t.Errorf("write after load: %+v, %v", u, err)
	}
}

// TestBackupIsOneSnapshot: each Update writes a pair of records; a backup
// taken while the updates go on holds both records of a pair or neither,
// and the pairs it holds are exactly the first k written.
func TestBackupIsOneSnapshot(t *testing.T) {
	src, err := openWith(t, t.TempDir(), newKey(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	writePair := func(i int) error {
		id := fmt.Sprintf("%06d", i)
		return src.Update(ctx, func(tx *Txn) error {
			if err := tx.Put("a", id, user{N: i}); err != nil {
				return err
			}
			return tx.Put("b", id, user{N: i})
		})
	}
	for i := range 200 {
		if err := writePair(i); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var written atomic.Int64
	written.Store(200)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 200; !stop.Load(); i++ {
			if err := writePair(i); err != nil {
				t.Error(err)
				return
			}
			written.Add(1)
		}
	})
	var backups [][]byte
	for range 3 {
		var buf bytes.Buffer
		if err := src.Backup(ctx, &buf); err != nil {
			t.Fatal(err)
		}
		backups = append(backups, buf.Bytes())
	}
	stop.Store(true)
	wg.Wait()

	for n, b := range backups {
		dst, err := openWith(t, t.TempDir(), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.Load(ctx, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		a, _ := snapshot(t, dst, "a")
		bb, _ := snapshot(t, dst, "b")
		ids := make([]string, 0, len(a))
		for id := range a {
			if _, ok := bb[id]; !ok {
				t.Errorf("backup %d: pair %s half there", n, id)
			}
			ids = append(ids, id)
		}
		if len(a) != len(bb) {
			t.Errorf("backup %d: %d a records, %d b records", n, len(a), len(bb))
		}
		slices.Sort(ids)
		for i, id := range ids {
			if id != fmt.Sprintf("%06d", i) {
				t.Fatalf("backup %d: pairs are not a prefix of the writes: #%d is %s", n, i, id)
			}
		}
		if len(ids) < 200 || int64(len(ids)) > written.Load() {
			t.Errorf("backup %d holds %d pairs; %d were written, 200 before it started", n, len(ids), written.Load())
		}
		t.Logf("backup %d: %d pairs (of %d written by the end)", n, len(ids), written.Load())
	}
}

// failingReader returns data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestLoadErrors(t *testing.T) {
	src := openTest(t, "")
	for i := range 10 {
		if err := put(t, src, "t", fmt.Sprint(i), user{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := src.Backup(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	errBroken := errors.New("broken stream")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	for _, c := range []struct {
		name string
		ctx  context.Context
		r    io.Reader
		into *Store
		want error
	}{
		{"truncated", context.Background(), bytes.NewReader(full[:len(full)-3]), nil, io.ErrUnexpectedEOF},
		{"reader error", context.Background(), &failingReader{data: full[:len(full)/2], err: errBroken}, nil, errBroken},
		{"canceled", canceled, bytes.NewReader(full), nil, context.Canceled},
		{"not empty", context.Background(), bytes.NewReader(full), src, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			into := c.into
			if into == nil {
				into = openTest(t, "")
			}
			err := into.Load(c.ctx, c.r)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}

	t.Run("backup canceled", func(t *testing.T) {
		if err := src.Backup(canceled, io.Discard); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("backup writer error", func(t *testing.T) {
		if err := src.Backup(context.Background(), errWriter{errBroken}); !errors.Is(err, errBroken) {
			t.Fatalf("err = %v, want %v", err, errBroken)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s := openTest(t, "")
		s.Close()
		if err := s.Backup(context.Background(), io.Discard); !errors.Is(err, ErrClosed) {
			t.Errorf("Backup on a closed store: %v", err)
		}
		if err := s.Load(context.Background(), bytes.NewReader(full)); !errors.Is(err, ErrClosed) {
			t.Errorf("Load on a closed store: %v", err)
		}
	})
}

type errWriter struct{ err error }

func (e errWriter) Write([]byte) (int, error) { return 0, e.err }

// TestLockDir: LockDir fails while a store is open, and holds off Open
// until released.
func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	if _, err := LockDir(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("LockDir on an open store: %v, want ErrLocked", err)
	}
	s.Close()
	release, err := LockDir(dir)
	if err != nil {
		t.Fatalf("LockDir on a closed store: %v", err)
	}
	if s2, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1}); err == nil {
		s2.Close()
		t.Fatal("Open succeeded while LockDir holds the lock")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	openTest(t, dir)
	if _, err := LockDir(t.TempDir() + "/missing"); err == nil {
		t.Error("LockDir on a missing dir succeeded")
	}
}
