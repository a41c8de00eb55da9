// grpcpair runs a gRPC server and its client in one process, over 127.0.0.1, with Debian's
// google.golang.org/grpc (1.33, built in GOPATH mode): two unary methods, Fast and Slow (5 ms),
// and one that fails (Fail, codes.NotFound), each called a known number of times. No protoc:
// the messages are raw bytes through a codec registered for them.
package main

import (
	"context"
	"flag"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"

	"goprobe.test/progs/internal/harness"
)

// raw passes []byte messages through unchanged.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error { *(v.(*[]byte)) = append([]byte(nil), data...); return nil }
func (raw) Name() string                               { return "goprobe-raw" }

type service interface{}

type impl struct{}

func handler(sleep time.Duration, fail bool) func(interface{}, context.Context, func(interface{}) error, grpc.UnaryServerInterceptor) (interface{}, error) {
	return func(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		time.Sleep(sleep)
		if fail {
			return nil, status.Error(codes.NotFound, "no such thing")
		}
		out := append([]byte("ok:"), in...)
		return &out, nil
	}
}

func main() {
	fast := flag.Int("fast", 100, "Fast calls")
	slow := flag.Int("slow", 30, "Slow calls")
	fails := flag.Int("fail", 20, "Fail calls")
	harness.Start()
	encoding.RegisterCodec(raw{})

	desc := grpc.ServiceDesc{
		ServiceName: "goprobe.test.Pair",
		HandlerType: (*service)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Fast", Handler: handler(0, false)},
			{MethodName: "Slow", Handler: handler(5*time.Millisecond, false)},
			{MethodName: "Fail", Handler: handler(0, true)},
		},
	}
	srv := grpc.NewServer()
	srv.RegisterService(&desc, impl{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		harness.Fail("listen: %v", err)
	}
	go srv.Serve(ln)
	defer srv.Stop()

	conn, err := grpc.Dial(ln.Addr().String(), grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.CallContentSubtype("goprobe-raw")))
	if err != nil {
		harness.Fail("dial: %v", err)
	}
	defer conn.Close()
	result := map[string]int{}
	call := func(method string, n int, wantCode codes.Code) {
		for i := 0; i < n; i++ {
			in := []byte("x")
			var out []byte
			err := conn.Invoke(context.Background(), "/goprobe.test.Pair/"+method, &in, &out)
			if status.Code(err) != wantCode {
				harness.Fail("%s: %v", method, err)
			}
			result[method]++
		}
	}
	call("Fast", *fast, codes.OK)
	call("Slow", *slow, codes.OK)
	call("Fail", *fails, codes.NotFound)
	harness.Result(result)
}
