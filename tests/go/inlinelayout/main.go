// inlinelayout marshals records with the code gogoproto generates for etcd 3.4's
// mvccpb.KeyValue: MarshalTo writes each non-zero field as a tag byte and a varint, and the
// varint encoder (goprobeE2EEncodeVarint, etcd's encodeVarintKv) is inlined once per field.
// Go 1.19 lays some of those copies out in several ranges, one of them placed after the copy has
// already been left (the `offset+1` and a spill of the result, around the copy of the bytes that
// follow): reaching that piece is not a new execution of the copy. The ground truth is how
// many times the encoder ran: one per non-zero field of every record marshalled.
package main

import (
	"flag"

	"goprobe.test/progs/internal/harness"
)

// goprobeE2ERecord has the fields of etcd's mvccpb.KeyValue, in its order.
type goprobeE2ERecord struct {
	Key            []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Value          []byte
	Lease          int64
}

// goprobeE2EMarshalTo is gogoproto's (*KeyValue).MarshalTo for goprobeE2ERecord, statement for
// statement.
//
//go:noinline
func goprobeE2EMarshalTo(m *goprobeE2ERecord, dAtA []byte) (int, error) {
	var i int
	_ = i
	var l int
	_ = l
	if len(m.Key) > 0 {
		dAtA[i] = 0xa
		i++
		i = goprobeE2EEncodeVarint(dAtA, i, uint64(len(m.Key)))
		i += copy(dAtA[i:], m.Key)
	}
	if m.CreateRevision != 0 {
		dAtA[i] = 0x10
		i++
		i = goprobeE2EEncodeVarint(dAtA, i, uint64(m.CreateRevision))
	}
	if m.ModRevision != 0 {
		dAtA[i] = 0x18
		i++
		i = goprobeE2EEncodeVarint(dAtA, i, uint64(m.ModRevision))
	}
	if m.Version != 0 {
		dAtA[i] = 0x20
		i++
		i = goprobeE2EEncodeVarint(dAtA, i, uint64(m.Version))
	}
	if len(m.Value) > 0 {
		dAtA[i] = 0x2a
		i++
		i = goprobeE2EEncodeVarint(dAtA, i, uint64(len(m.Value)))
		i += copy(dAtA[i:], m.Value)
	}
	if m.Lease != 0 {
		dAtA[i] = 0x30
		i++
		i = goprobeE2EEncodeVarint(dAtA, i, uint64(m.Lease))
	}
	return i, nil
}

// goprobeE2EEncodeVarint is gogoproto's encodeVarintKv; small enough to be inlined.
func goprobeE2EEncodeVarint(dAtA []byte, offset int, v uint64) int {
	for v >= 1<<7 {
		dAtA[offset] = uint8(v&0x7f | 0x80)
		v >>= 7
		offset++
	}
	dAtA[offset] = uint8(v)
	return offset + 1
}

func main() {
	n := flag.Int("n", 500, "records to marshal")
	harness.Start()

	buf := make([]byte, 4096)
	key := []byte("/registry/goprobe/key")
	value := make([]byte, 300) // a length of two varint bytes
	marshals, varints := 0, 0
	for r := 0; r < *n; r++ {
		// Like etcd's puts and ranges: every record has a key, revisions and a value; some
		// have a lease; the varints take one to three bytes.
		rec := goprobeE2ERecord{
			Key:            key[:1+r%len(key)],
			CreateRevision: int64(1 + r),
			ModRevision:    int64(1 + r*37),
			Version:        int64(1 + r%3),
			Value:          value[:1+r%len(value)],
		}
		if r%4 == 0 {
			rec.Lease = int64(0x10000 + r)
		}
		size, err := goprobeE2EMarshalTo(&rec, buf)
		if err != nil || size == 0 {
			harness.Fail("marshal %d: %d bytes, %v", r, size, err)
		}
		marshals++
		varints += 5
		if rec.Lease != 0 {
			varints++
		}
	}
	harness.Result(struct {
		Marshals int `json:"marshals"`
		Varints  int `json:"varints"`
	}{marshals, varints})
}
