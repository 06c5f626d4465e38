#lang racket/base
;; The session's attachment: the WebSocket GET /v1/sessions/{s}/attach, kept open for the life
;; of this process. While it is open the session never expires; when the process dies, the
;; kernel closes the connection and the daemon drops the session and every socket in it at once.
;;
;; A minimal RFC 6455 client, enough for this one use: the opening handshake (with the
;; Sec-WebSocket-Accept check), then a reader that answers pings with pongs and ignores every
;; other frame (the daemon's "attached" event). The client never sends data frames: detaching
;; is not offered, the attachment simply ends with the process.
(require file/sha1
         net/base64
         racket/port
         racket/string
         racket/tcp)

(provide attach!)

(define guid #"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")

(define (random-bytes n)
  (apply bytes (for/list ([_ (in-range n)]) (random 256))))

;; Open the attachment; #f when the daemon refused it (the lease then keeps the session).
(define (attach! host port token session)
  (with-handlers ([exn:fail? (λ (e) #f)])
    (define-values (in out) (tcp-connect host port))
    (define key (base64-encode (random-bytes 16) #""))
    (fprintf out (string-append "GET /v1/sessions/~a/attach HTTP/1.1\r\n"
                                "Host: ~a:~a\r\n"
                                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Key: ~a\r\nSec-WebSocket-Version: 13\r\n"
                                "Authorization: Bearer ~a\r\n\r\n")
             session host port key token)
    (flush-output out)
    (define status (read-line in 'return-linefeed))
    (define headers
      (let loop ([acc '()])
        (define line (read-line in 'return-linefeed))
        (if (or (eof-object? line) (string=? line "")) acc (loop (cons (string-downcase line) acc)))))
    (define accept (base64-encode (sha1-bytes (bytes-append key guid)) #""))
    (cond
      [(and (string? status) (regexp-match? #rx"^HTTP/1.1 101 " status)
            (member (string-append "sec-websocket-accept: " (string-downcase (bytes->string/latin-1 accept)))
                    headers))
       (thread (λ () (read-frames in out)))
       #t]
      [else (close-input-port in) (close-output-port out) #f])))

(define (read-n in n)
  (define bs (read-bytes n in))
  (if (and (bytes? bs) (= (bytes-length bs) n)) bs (raise 'closed)))

(define (read-frames in out)
  (with-handlers ([(λ (e) #t) (λ (e) (close-input-port in) (close-output-port out))])
    (let loop ()
      (define head (read-n in 2))
      (define opcode (bitwise-and (bytes-ref head 0) #x0f))
      (define len7 (bitwise-and (bytes-ref head 1) #x7f))
      (define len (case len7
                    [(126) (integer-bytes->integer (read-n in 2) #f #t)]
                    [(127) (integer-bytes->integer (read-n in 8) #f #t)]
                    [else len7]))
      (define mask (and (bitwise-bit-set? (bytes-ref head 1) 7) (read-n in 4)))
      (define payload (unmask (read-n in len) mask))
      (case opcode
        [(9) (send-frame out #xA payload) (loop)] ; ping → pong
        [(8) (send-frame out #x8 #"") (raise 'closed)] ; the daemon ends the attachment
        [else (loop)]))))

(define (unmask bs mask)
  (if mask
      (apply bytes (for/list ([b (in-bytes bs)] [i (in-naturals)])
                     (bitwise-xor b (bytes-ref mask (modulo i 4)))))
      bs))

;; A client frame: FIN, the opcode, masked as RFC 6455 requires (payloads here are < 126 bytes).
(define (send-frame out opcode payload)
  (define mask (random-bytes 4))
  (write-bytes (bytes (bitwise-ior #x80 opcode) (bitwise-ior #x80 (bytes-length payload))) out)
  (write-bytes mask out)
  (write-bytes (unmask payload mask) out)
  (flush-output out))
