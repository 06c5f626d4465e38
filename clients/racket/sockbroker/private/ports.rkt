#lang racket/base
;; Real Racket ports over a connection's two daemon handles (tin_…, tout_…).
;;
;; The input port is a `make-input-port/read-to-peek` port: a read asks the daemon for what is
;; there without waiting (Ports.Read mode nowait); when nothing is, the port waits on a
;; `port_read_ready` event (evt.rkt), which consumes nothing, so a read, a peek or a `sync` that
;; is broken or times out loses no byte. Peeking, progress events, `read-line` and friends come
;; from Racket's port machinery.
;;
;; The output port buffers like Racket's own TCP ports: 4096 bytes, block-buffered at first,
;; 'line and 'none through `file-stream-buffer-mode`. A flush (a full buffer, a newline in
;; 'line mode, `flush-output`, close) writes the bytes to the daemon with flush: true.
;;
;; A custodian shutdown closes Racket's own TCP ports, but custom ports belong to no custodian:
;; so each pair holds a custodian box of the custodian it was made under. Once that custodian is
;; shut down (the daemon has closed the handles already), the next operation on a port closes it
;; here, without a call to the daemon, and fails as an operation on a closed port does.
(require racket/port
         "broker.rkt"
         "evt.rkt")

(provide make-tcp-ports
         port-handle
         abandon-port!)

(struct info (handle [abandon? #:mutable]))
(define port-infos (make-weak-hasheq)) ; port → info

;; The daemon handle of one of our TCP ports, or #f.
(define (port-handle p)
  (define i (hash-ref port-infos p #f))
  (and i (info-handle i)))

;; tcp-abandon-port: an output port closes without FIN while its input port is open.
(define (abandon-port! p)
  (define i (hash-ref port-infos p))
  (when (output-port? p) (set-info-abandon?! i #t))
  (if (output-port? p) (close-output-port p) (close-input-port p)))

(define buffer-size 4096)

(define (make-tcp-ports in-h out-h)
  (define alive (make-custodian-box (current-custodian) #t))
  (define in (make-in in-h alive))
  (define out (make-out out-h alive))
  (hash-set! port-infos in (info in-h #f))
  (hash-set! port-infos out (info out-h #f))
  (values in out))

(define (closed-by-custodian self who)
  (define what (if (input-port? self) "input" "output"))
  (if (input-port? self) (close-input-port self) (close-output-port self))
  (raise (exn:fail (format "~a: ~a port is closed\n  ~a port: ~e" who what what self)
                   (current-continuation-marks))))

(define (make-in h alive)
  (define mode 'block)
  (define (read-in bstr)
    (unless (custodian-box-value alive) (closed-by-custodian self 'read-bytes))
    (define reply
      (call "POST" (format "/v1/tcp/ports/~a/read" h)
            (hasheq 'max (min (bytes-length bstr) 65536) 'mode "nowait")))
    (define data (unb64 (hash-ref reply 'data #f)))
    (cond
      [(hash-ref reply 'eof #f) eof]
      [(positive? (bytes-length data))
       (bytes-copy! bstr 0 data)
       (bytes-length data)]
      [else (broker-evt (hasheq 'port_read_ready (hasheq 'port h)) (λ (_) 0))]))
  (define (close) (when (custodian-box-value alive) (call "DELETE" (format "/v1/tcp/ports/~a" h))))
  (define self
    (make-input-port/read-to-peek
     'tcp read-in #f close #f void 1
     (case-lambda
       [() mode]
       [(m) (when (eq? m 'line)
              (raise (exn:fail:contract
                      "file-stream-buffer-mode: 'line buffering not supported for an input port"
                      (current-continuation-marks))))
            (set! mode m)])
     #t))
  self)

(define (make-out h alive)
  (define lock (make-semaphore 1))
  (define buf (make-bytes buffer-size))
  (define used 0)
  (define mode 'block)
  (define closed? #f)
  (define (send! bs)
    (when (positive? (bytes-length bs))
      (call "POST" (format "/v1/tcp/ports/~a/write" h) (hasheq 'data (b64 bs) 'flush #t))))
  (define (drain!)
    (when (positive? used)
      (define bs (subbytes buf 0 used))
      (set! used 0)
      (send! bs)))
  (define (write-out bstr start end non-block? enable-break?)
    (unless (custodian-box-value alive) (closed-by-custodian self 'write-bytes))
    (call-with-semaphore
     lock
     (λ ()
       (cond
         [(= start end) (drain!) 0]
         [(or non-block? (eq? mode 'none))
          (drain!)
          (send! (subbytes bstr start end))
          (- end start)]
         [else
          (define n (min (- end start) (- buffer-size used)))
          (bytes-copy! buf used bstr start (+ start n))
          (set! used (+ used n))
          (when (or (= used buffer-size)
                    (and (eq? mode 'line)
                         (for/or ([b (in-bytes bstr start (+ start n))]) (= b 10))))
            (drain!))
          n]))))
  (define (close)
    (call-with-semaphore
     lock
     (λ ()
       (unless (or closed? (not (custodian-box-value alive)))
         (set! closed? #t)
         (with-handlers ([exn:fail? void]) (drain!)) ; Racket's close does not fail on a lost peer
         (if (info-abandon? (hash-ref port-infos self))
             (call "POST" (format "/v1/tcp/ports/~a/abandon" h))
             (call "DELETE" (format "/v1/tcp/ports/~a" h)))))))
  (define self
    (make-output-port
     'tcp always-evt write-out close #f #f #f #f void 1
     (case-lambda
       [() mode]
       [(m)
        (call-with-semaphore lock (λ () (when (eq? m 'none) (drain!)) (set! mode m)))])))
  self)
