// The upstream of conformance/clients.sh: the Echo service of ../../clients.proto on
// 127.0.0.1, plaintext h2c. Writes its port to the file named by -port-file once it listens.
// Every call is recorded by its x-call-id metadata: how it ended ("ok", "cancelled" when the
// client or proxy reset it, "deadline" when its grpc-timeout passed), for Outcome to report.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "pinot-proxy/conformance/grpc-go/echopb"
)

const maxMessage = 64 << 20

type server struct {
	pb.UnimplementedEchoServer
	mu       sync.Mutex
	changed  *sync.Cond
	outcomes map[string]string
}

func (s *server) record(ctx context.Context, outcome string) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get("x-call-id")
	if len(ids) == 0 {
		return
	}
	if outcome == "" {
		switch {
		case errors.Is(ctx.Err(), context.Canceled):
			outcome = "cancelled"
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			outcome = "deadline"
		default:
			outcome = "ok"
		}
	}
	s.mu.Lock()
	s.outcomes[ids[0]] = outcome
	s.mu.Unlock()
	s.changed.Broadcast()
}

// start marks a call as seen, before it ends.
func (s *server) start(ctx context.Context) {
	s.record(ctx, "pending")
}

// end records how the call ended: its context's state once the handler is done.
func (s *server) end(ctx context.Context) { s.record(ctx, "") }

// echoMetadata copies each x-echo-bin value into the headers (x-head-bin) and the trailers
// (x-trail-bin), byte for byte.
func echoMetadata(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("x-echo-bin")
	if len(vals) == 0 {
		return
	}
	head, trail := metadata.MD{}, metadata.MD{}
	head["x-head-bin"] = append([]string(nil), vals...)
	trail["x-trail-bin"] = append([]string(nil), vals...)
	_ = grpc.SetHeader(ctx, head)
	_ = grpc.SetTrailer(ctx, trail)
}

// hold waits for ms milliseconds or until the call ends, whichever is first.
func hold(ctx context.Context, ms int32) {
	if ms <= 0 {
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func statusOf(req *pb.Req) error {
	if req.StatusCode == 0 {
		return nil
	}
	return status.Error(codes.Code(req.StatusCode), req.StatusMessage)
}

func (s *server) Unary(ctx context.Context, req *pb.Req) (*pb.Resp, error) {
	s.start(ctx)
	defer s.end(ctx)
	echoMetadata(ctx)
	hold(ctx, req.HoldMs)
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if err := statusOf(req); err != nil {
		return nil, err
	}
	return &pb.Resp{Payload: req.Payload}, nil
}

func (s *server) ServerStream(req *pb.Req, stream pb.Echo_ServerStreamServer) error {
	ctx := stream.Context()
	s.start(ctx)
	defer s.end(ctx)
	echoMetadata(ctx)
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	gen := mrand.NewChaCha8(seed)
	digest := sha256.New()
	size := max(int(req.Size), 1)
	for i := int32(0); i < req.Count; i++ {
		buf := make([]byte, size/2+int(gen.Uint64()%uint64(size-size/2+1)))
		_, _ = gen.Read(buf)
		digest.Write(buf)
		if err := stream.Send(&pb.Resp{Payload: buf}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-digest", hex.EncodeToString(digest.Sum(nil)),
		"x-count", strconv.Itoa(int(req.Count))))
	hold(ctx, req.HoldMs)
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return statusOf(req)
}

func (s *server) ClientStream(stream pb.Echo_ClientStreamServer) error {
	ctx := stream.Context()
	s.start(ctx)
	defer s.end(ctx)
	digest := sha256.New()
	n := 0
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		digest.Write(req.Payload)
		n++
	}
	stream.SetTrailer(metadata.Pairs("x-count", strconv.Itoa(n)))
	return stream.SendAndClose(&pb.Resp{Payload: digest.Sum(nil)})
}

func (s *server) Bidi(stream pb.Echo_BidiServer) error {
	ctx := stream.Context()
	s.start(ctx)
	defer s.end(ctx)
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&pb.Resp{Payload: req.Payload}); err != nil {
			return err
		}
	}
}

func (s *server) Outcome(ctx context.Context, req *pb.OutcomeReq) (*pb.OutcomeResp, error) {
	deadline := time.Now().Add(time.Duration(req.WaitMs) * time.Millisecond)
	// Wake the waiter below at the deadline.
	timer := time.AfterFunc(time.Duration(req.WaitMs)*time.Millisecond, s.changed.Broadcast)
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		outcome, seen := s.outcomes[req.CallId]
		if seen && outcome != "pending" {
			return &pb.OutcomeResp{Outcome: outcome}, nil
		}
		if !time.Now().Before(deadline) {
			if !seen {
				outcome = "unknown"
			}
			return &pb.OutcomeResp{Outcome: outcome}, nil
		}
		s.changed.Wait()
	}
}

func main() {
	portFile := flag.String("port-file", "", "file to write the listening port to")
	flag.Parse()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	s := &server{outcomes: map[string]string{}}
	s.changed = sync.NewCond(&s.mu)
	g := grpc.NewServer(grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage))
	pb.RegisterEchoServer(g, s)
	port := strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)
	if *portFile != "" {
		if err := os.WriteFile(*portFile+".tmp", []byte(port), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(*portFile+".tmp", *portFile); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("upstream listening on 127.0.0.1:" + port)
	log.Fatal(g.Serve(lis))
}
