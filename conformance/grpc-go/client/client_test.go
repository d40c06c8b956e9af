// The grpc-go client of conformance/clients.sh: the same checks as ../../clients_grpcio.py,
// run as one test per (mode, check), each printing
// "RESULT grpc-go MODE CHECK PASS|FAIL (SECONDS s) detail".
//
// Environment: TARGETS ("direct=HOST:PORT plaintext=HOST:PORT tls=HOST:PORT"), UPSTREAM
// (asked for call outcomes), FORWARD_PORT (the upstream's port, sent as forward-port),
// CA_FILE (the proxy's certificate, for tls).
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "pinot-proxy/conformance/grpc-go/echopb"
)

const (
	maxMessage    = 64 << 20
	wait          = 10 * time.Second // the bound on every call that is not meant to hang
	statusMessage = "conformance: 100% not OK, ünïcödé ✓ \t%41"
)

var binValues = []string{string(allBytes()), "\x00", "\xff\xfe\x00\x01 trail=ing,comma"}

func allBytes() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

type env struct {
	mode     string
	target   string
	stub     pb.EchoClient
	direct   pb.EchoClient // the same service, not through the proxy
	upstream pb.EchoClient
}

// ctx returns a context carrying the routing headers (and x-call-id when given), bounded by d.
func callCtx(d time.Duration, callID string, kv ...string) (context.Context, context.CancelFunc) {
	md := metadata.Pairs("forward-host", "127.0.0.1", "forward-port", os.Getenv("FORWARD_PORT"))
	if callID != "" {
		md.Append("x-call-id", callID)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		md.Append(kv[i], kv[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	return metadata.NewOutgoingContext(ctx, md), cancel
}

func newID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (e env) outcome(id string) string {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := e.upstream.Outcome(ctx, &pb.OutcomeReq{CallId: id, WaitMs: 5000})
	if err != nil {
		return "Outcome failed: " + err.Error()
	}
	return resp.Outcome
}

func wantStatus(err error, code codes.Code) error {
	s := status.Convert(err)
	if s.Code() != code || s.Message() != statusMessage {
		return fmt.Errorf("got %v %q, expected %v %q", s.Code(), s.Message(), code, statusMessage)
	}
	return nil
}

func trailersOnly(e env) error {
	ctx, cancel := callCtx(wait, "")
	defer cancel()
	var header metadata.MD
	_, err := e.stub.Unary(ctx, &pb.Req{StatusCode: int32(codes.FailedPrecondition),
		StatusMessage: statusMessage}, grpc.Header(&header))
	if err == nil {
		return errors.New("expected FAILED_PRECONDITION, got OK")
	}
	return wantStatus(err, codes.FailedPrecondition)
}

func statusAfterMessages(e env) error {
	ctx, cancel := callCtx(wait, "")
	defer cancel()
	stream, err := e.stub.ServerStream(ctx, &pb.Req{Count: 3, Size: 100,
		StatusCode: int32(codes.ResourceExhausted), StatusMessage: statusMessage})
	if err != nil {
		return err
	}
	digest, n := sha256.New(), 0
	for {
		resp, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("expected RESOURCE_EXHAUSTED, got OK after %d messages", n)
			}
			if err := wantStatus(err, codes.ResourceExhausted); err != nil {
				return fmt.Errorf("%w (after %d messages)", err, n)
			}
			break
		}
		digest.Write(resp.Payload)
		n++
	}
	if n != 3 {
		return fmt.Errorf("%d messages before the status, expected 3", n)
	}
	got := hex.EncodeToString(digest.Sum(nil))
	if want := stream.Trailer().Get("x-digest"); !slices.Equal(want, []string{got}) {
		return fmt.Errorf("digest of the messages %s, trailer %v", got, want)
	}
	return nil
}

func binaryMetadata(e env) error {
	kv := []string{}
	for _, v := range binValues {
		kv = append(kv, "x-echo-bin", v)
	}
	ctx, cancel := callCtx(wait, "", kv...)
	defer cancel()
	var header, trailer metadata.MD
	resp, err := e.stub.Unary(ctx, &pb.Req{Payload: []byte("md")}, grpc.Header(&header),
		grpc.Trailer(&trailer))
	if err != nil {
		return err
	}
	if got := header.Get("x-head-bin"); !slices.Equal(got, binValues) {
		return fmt.Errorf("headers x-head-bin %q, expected %q", got, binValues)
	}
	if got := trailer.Get("x-trail-bin"); !slices.Equal(got, binValues) {
		return fmt.Errorf("trailers x-trail-bin %q, expected %q", got, binValues)
	}
	if string(resp.Payload) != "md" {
		return errors.New("payload changed")
	}
	return nil
}

func largeMessage(e env) error {
	payload := make([]byte, 8<<20)
	_, _ = rand.Read(payload)
	ctx, cancel := callCtx(30*time.Second, "")
	defer cancel()
	resp, err := e.stub.Unary(ctx, &pb.Req{Payload: payload})
	if err != nil {
		return err
	}
	if len(resp.Payload) != len(payload) {
		return fmt.Errorf("%d bytes back, sent %d", len(resp.Payload), len(payload))
	}
	if !bytes.Equal(resp.Payload, payload) {
		return errors.New("8 MiB came back with different bytes")
	}
	return nil
}

func serverStream(e env) error {
	const n = 1000
	ctx, cancel := callCtx(60*time.Second, "")
	defer cancel()
	stream, err := e.stub.ServerStream(ctx, &pb.Req{Count: n, Size: 32768})
	if err != nil {
		return err
	}
	digest, count, total := sha256.New(), 0, 0
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d messages: %w", count, err)
		}
		digest.Write(resp.Payload)
		count++
		total += len(resp.Payload)
	}
	if count != n {
		return fmt.Errorf("%d messages, expected %d", count, n)
	}
	got := hex.EncodeToString(digest.Sum(nil))
	if want := stream.Trailer().Get("x-digest"); !slices.Equal(want, []string{got}) {
		return fmt.Errorf("SHA-256 of the %d bytes received %s, upstream sent %v", total, got, want)
	}
	return nil
}

func clientStream(e env) error {
	ctx, cancel := callCtx(60*time.Second, "")
	defer cancel()
	stream, err := e.stub.ClientStream(ctx)
	if err != nil {
		return err
	}
	digest, n := sha256.New(), 0
	for range 20 {
		for _, size := range []int{0, 1, 5, 16384, 100000, 1 << 20} {
			b := make([]byte, size)
			_, _ = rand.Read(b)
			digest.Write(b)
			n++
			if err := stream.Send(&pb.Req{Payload: b}); err != nil {
				return fmt.Errorf("send %d: %w", n, err)
			}
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	if want := digest.Sum(nil); !bytes.Equal(resp.Payload, want) {
		return fmt.Errorf("upstream digest %x, sent %x", resp.Payload, want)
	}
	if got := stream.Trailer().Get("x-count"); !slices.Equal(got, []string{strconv.Itoa(n)}) {
		return fmt.Errorf("x-count %v, expected %d", got, n)
	}
	return nil
}

// bidi: ping-pong, each message sent only once the previous echo came back, so nothing may
// be held back on the way.
func bidi(e env) error {
	ctx, cancel := callCtx(60*time.Second, "")
	defer cancel()
	stream, err := e.stub.Bidi(ctx)
	if err != nil {
		return err
	}
	for i := range 100 {
		payload := make([]byte, 1+i*997)
		_, _ = rand.Read(payload)
		if err := stream.Send(&pb.Req{Payload: payload}); err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("echo %d: %w", i, err)
		}
		if !bytes.Equal(resp.Payload, payload) {
			return fmt.Errorf("echo %d differs", i)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != io.EOF {
		return fmt.Errorf("after the last echo: %v, expected the end of the stream", err)
	}
	return nil
}

func deadline(e env) error {
	id := newID()
	ctx, cancel := callCtx(500*time.Millisecond, id)
	defer cancel()
	started := time.Now()
	_, err := e.stub.Unary(ctx, &pb.Req{HoldMs: 20000})
	took := time.Since(started)
	if s := status.Convert(err); s.Code() != codes.DeadlineExceeded {
		return fmt.Errorf("got %v %q, expected DEADLINE_EXCEEDED", s.Code(), s.Message())
	}
	if took > 5*time.Second {
		return fmt.Errorf("DEADLINE_EXCEEDED after %v for a 0.5 s deadline", took)
	}
	if seen := e.outcome(id); seen != "cancelled" && seen != "deadline" {
		return fmt.Errorf("upstream says the call ended %q", seen)
	}
	return nil
}

func cancelCall(e env) error {
	id := newID()
	ctx, cancel := callCtx(30*time.Second, id)
	defer cancel()
	ctx, cancelNow := context.WithCancel(ctx)
	defer cancelNow()
	stream, err := e.stub.ServerStream(ctx, &pb.Req{Count: 1, Size: 10, HoldMs: 20000})
	if err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil { // the call has reached the upstream
		return err
	}
	cancelNow()
	if seen := e.outcome(id); seen != "cancelled" {
		return fmt.Errorf("upstream says the call ended %q, expected \"cancelled\"", seen)
	}
	return nil
}

// seenMetadata is what a client read of one call's metadata.
type seenMetadata struct {
	what            string
	header, trailer metadata.MD
	status          string
}

// metadataOf makes a call of each kind that ends with metadata (a status alone; a status
// after messages; an answer with binary metadata) and returns the headers, trailers and
// status each got.
func metadataOf(stub pb.EchoClient) ([]seenMetadata, error) {
	var out []seenMetadata
	kv := []string{}
	for _, v := range binValues {
		kv = append(kv, "x-echo-bin", v)
	}
	for what, req := range map[string]*pb.Req{
		"unary with a status":  {StatusCode: int32(codes.FailedPrecondition), StatusMessage: statusMessage},
		"unary with an answer": {Payload: []byte("md")},
	} {
		ctx, cancel := callCtx(wait, "", kv...)
		var header, trailer metadata.MD
		_, err := stub.Unary(ctx, req, grpc.Header(&header), grpc.Trailer(&trailer))
		cancel()
		out = append(out, seenMetadata{what, header, trailer, status.Convert(err).String()})
	}
	// And a status alone with no metadata set: a trailers-only answer.
	ctx, cancel := callCtx(wait, "")
	var header, trailer metadata.MD
	_, err := stub.Unary(ctx, &pb.Req{StatusCode: int32(codes.NotFound), StatusMessage: statusMessage},
		grpc.Header(&header), grpc.Trailer(&trailer))
	cancel()
	out = append(out, seenMetadata{"trailers-only", header, trailer, status.Convert(err).String()})

	ctx, cancel = callCtx(wait, "", kv...)
	defer cancel()
	stream, err := stub.ServerStream(ctx, &pb.Req{Count: 2, Size: 10,
		StatusCode: int32(codes.Aborted), StatusMessage: statusMessage})
	if err != nil {
		return nil, err
	}
	for err == nil {
		_, err = stream.Recv()
	}
	header, herr := stream.Header()
	if herr != nil {
		return nil, herr
	}
	trailer = stream.Trailer()
	delete(trailer, "x-digest") // random messages: their digest differs from call to call
	out = append(out, seenMetadata{"server stream with a status", header, trailer,
		status.Convert(err).String()})
	slices.SortFunc(out, func(a, b seenMetadata) int { return strings.Compare(a.what, b.what) })
	return out, nil
}

func short(values []string) string {
	s := fmt.Sprintf("%q", values)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// diffMD names each key whose values differ.
func diffMD(where string, got, want metadata.MD) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(maps.Collect(func(yield func(string, bool) bool) {
		for k := range got {
			yield(k, true)
		}
		for k := range want {
			yield(k, true)
		}
	}))) {
		g, w := got[k], want[k]
		if slices.Equal(g, w) {
			continue
		}
		switch {
		case w == nil:
			out = append(out, fmt.Sprintf("%s %s added: %s", where, k, short(g)))
		case g == nil:
			out = append(out, fmt.Sprintf("%s %s dropped: %s", where, k, short(w)))
		default:
			out = append(out, fmt.Sprintf("%s %s: %s, directly %s", where, k, short(g), short(w)))
		}
	}
	return out
}

// sameMetadata: what a grpc-go client reads of headers, trailers and status is the same
// through the proxy as from the upstream directly.
func sameMetadata(e env) error {
	want, err := metadataOf(e.direct)
	if err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	got, err := metadataOf(e.stub)
	if err != nil {
		return err
	}
	var diffs []string
	for i := range want {
		d := diffMD("header", got[i].header, want[i].header)
		d = append(d, diffMD("trailer", got[i].trailer, want[i].trailer)...)
		if got[i].status != want[i].status {
			d = append(d, fmt.Sprintf("status %s, directly %s", got[i].status, want[i].status))
		}
		if len(d) > 0 {
			diffs = append(diffs, want[i].what+": "+strings.Join(d, "; "))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("through the proxy, %s", strings.Join(diffs, " | "))
	}
	return nil
}

var checks = []struct {
	name string
	fn   func(env) error
}{
	{"trailers-only-status", trailersOnly},
	{"status-after-messages", statusAfterMessages},
	{"binary-metadata", binaryMetadata},
	{"large-message", largeMessage},
	{"server-stream", serverStream},
	{"client-stream", clientStream},
	{"bidi", bidi},
	{"deadline", deadline},
	{"cancel", cancelCall},
	{"same-metadata", sameMetadata},
	{"proxy-deadline", proxyDeadline},
}

// Checks of the proxy itself, not made against the upstream directly.
var proxyOnly = map[string]bool{"same-metadata": true, "proxy-deadline": true}

func dial(t *testing.T, mode, target string) *grpc.ClientConn {
	creds := insecure.NewCredentials()
	if mode == "tls" {
		var err error
		creds, err = credentials.NewClientTLSFromFile(os.Getenv("CA_FILE"), "")
		if err != nil {
			t.Fatal(err)
		}
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestClients(t *testing.T) {
	targets := strings.Fields(os.Getenv("TARGETS"))
	if len(targets) == 0 {
		t.Skip("TARGETS is not set: run conformance/clients.sh")
	}
	upstream := pb.NewEchoClient(dial(t, "direct", os.Getenv("UPSTREAM")))
	direct := pb.NewEchoClient(dial(t, "direct", os.Getenv("UPSTREAM")))
	for _, arg := range targets {
		mode, target, _ := strings.Cut(arg, "=")
		e := env{mode: mode, target: target, stub: pb.NewEchoClient(dial(t, mode, target)),
			direct: direct, upstream: upstream}
		for _, c := range checks {
			if proxyOnly[c.name] && mode == "direct" {
				continue
			}
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				started := time.Now()
				err := c.fn(e)
				took := time.Since(started).Seconds()
				if err != nil {
					detail := strings.ReplaceAll(err.Error(), "\n", " ")
					fmt.Printf("RESULT grpc-go %s %s FAIL (%.2f s) %s\n", mode, c.name, took, detail)
					t.Error(err)
				} else {
					fmt.Printf("RESULT grpc-go %s %s PASS (%.2f s)\n", mode, c.name, took)
				}
			})
		}
	}
}
