#lang racket/base
;; The connection to the broker: where it is, the REST calls, the session, errors, custodians
;; and breaks. Everything else in the collection goes through `call` and `blocking-call` here.
;;
;; - Where: $SOCKBROKER_URL (the REST door, "http://HOST:PORT"), else the `rest_url` of the
;;   daemon's runtime file ($SOCKBROKER_RUNTIME_FILE, else runtime.json beside the token file).
;;   The token: $SOCKBROKER_TOKEN_FILE, else the runtime file's `token_file`, else the daemon's
;;   default ($XDG_RUNTIME_DIR/sockbroker/token, else ~/.local/share/sockbroker/token).
;; - The session is opened at the first call and attached over the session WebSocket
;;   (attach.rkt): when this process dies, the kernel closes that connection and the daemon
;;   drops the session, closing every socket in it, at once. The lease (10 s) is renewed by a
;;   background thread as a second line, should the attachment break.
;; - Breaks: a blocking call carries a call id (Sockbroker-Call). A break during it cancels the
;;   call by id (Sessions.CancelCall): the daemon then either never performs the operation or
;;   gives its effect back, so the caller sees the operation or the break, never both.
;; - Custodians: each Racket custodian other than the one that instantiated this module maps to
;;   a daemon custodian (a child of the session's root); shutting the Racket custodian down
;;   shuts the daemon's down, which closes its sockets in the broker.
(require ffi/unsafe/atomic
         ffi/unsafe/custodian
         json
         net/base64
         net/http-client
         net/url
         racket/port
         racket/string
         "attach.rkt")

(provide call
         blocking-call
         cancel-call!
         fresh-call-id
         current-daemon-custodian
         internal-custodian
         b64
         unb64
         fields
         opt
         absent)

;; ── configuration ─────────────────────────────────────────────────────────────────────────────
(define (env name)
  (define v (getenv name))
  (and v (not (string=? v "")) v))

(define (default-token-file)
  (define xdg (env "XDG_RUNTIME_DIR"))
  (if xdg
      (build-path xdg "sockbroker" "token")
      (build-path (find-system-path 'home-dir) ".local" "share" "sockbroker" "token")))

(define (read-runtime-file path)
  (with-handlers ([exn:fail? (λ (e) #f)])
    (define v (call-with-input-file path (λ (in) (read-json in #:null #f))))
    (and (hash? v) v)))

(define (no-daemon fmt . args)
  (raise (exn:fail:network (apply format (string-append "sockbroker: " fmt) args)
                           (current-continuation-marks))))

;; → (values host port token)
(define (locate)
  (define token-env (env "SOCKBROKER_TOKEN_FILE"))
  (define token-guess (if token-env (string->path token-env) (default-token-file)))
  (define runtime-path
    (let ([r (env "SOCKBROKER_RUNTIME_FILE")])
      (if r (string->path r) (let-values ([(dir _n _d) (split-path token-guess)]) (build-path dir "runtime.json")))))
  (define runtime (and (not (env "SOCKBROKER_URL")) (read-runtime-file runtime-path)))
  (define url-text
    (or (env "SOCKBROKER_URL")
        (and runtime (hash-ref runtime 'rest_url #f))
        (no-daemon "no daemon found: set SOCKBROKER_URL, or start `sockbroker serve` (no runtime file at ~a)"
                   runtime-path)))
  (define u (string->url url-text))
  (unless (equal? (url-scheme u) "http")
    (no-daemon "SOCKBROKER_URL must be an http:// URL of the REST door, not ~s" url-text))
  (define host (case (url-host u) [("0.0.0.0" "") "127.0.0.1"] [("::") "::1"] [else (url-host u)]))
  (define token-file
    (cond [token-env token-env]
          [(and runtime (hash-ref runtime 'token_file #f))]
          [else token-guess]))
  (define token
    (with-handlers ([exn:fail:filesystem?
                     (λ (e) (no-daemon "cannot read the token file ~a: ~a" token-file (exn-message e)))])
      (string-trim (call-with-input-file token-file port->string))))
  (when (string=? token "") (no-daemon "the token file ~a is empty" token-file))
  (values host (or (url-port u) 80) token))

;; ── HTTP connections: a pool of keep-alive connections under our own custodian ────────────────
;; Our own custodian: the user's custodians never own the connections to the daemon.
(define internal-custodian (make-custodian))
(define the-host #f)
(define the-port #f)
(define the-token #f)
(define idle '()) ; (cons http-conn last-used-ms), most recent first
(define idle-limit-ms 30000.0) ; the daemon closes idle connections after 60 s

(define (take-conn)
  (define reuse
    (begin
      (start-atomic)
      (begin0 (let loop ()
                (cond [(null? idle) #f]
                      [else
                       (define c (car idle))
                       (set! idle (cdr idle))
                       (if (> (- (current-inexact-milliseconds) (cdr c)) idle-limit-ms)
                           (begin (http-conn-abandon! (car c)) (loop))
                           (car c))]))
              (end-atomic))))
  (or reuse
      (with-handlers ([exn:fail:network?
                       (λ (e) (no-daemon "no daemon answers at http://~a:~a: ~a" the-host the-port
                                         (car (string-split (exn-message e) "\n"))))])
        (parameterize ([current-custodian internal-custodian])
          (http-conn-open the-host #:port the-port)))))

(define (give-conn hc)
  (when (http-conn-live? hc)
    (start-atomic)
    (set! idle (cons (cons hc (current-inexact-milliseconds)) idle))
    (end-atomic)))

;; ── JSON helpers ──────────────────────────────────────────────────────────────────────────────
(define absent (string->uninterned-symbol "absent"))
(define (opt v) (if v v absent))
;; (fields 'k v ...) → a hasheq without the members whose value is `absent`.
(define (fields . kvs)
  (let loop ([kvs kvs] [h (hasheq)])
    (cond [(null? kvs) h]
          [(eq? (cadr kvs) absent) (loop (cddr kvs) h)]
          [else (loop (cddr kvs) (hash-set h (car kvs) (cadr kvs)))])))
(define (b64 bs) (bytes->string/latin-1 (base64-encode bs #"")))
(define (unb64 s) (if s (base64-decode (string->bytes/latin-1 s)) #""))

;; ── errors: the daemon's problem documents become Racket's exceptions ─────────────────────────
(define (problem->exn status p)
  (define kind (and (hash? p) (hash-ref p 'kind #f)))
  (define msg (or (and (hash? p) (hash-ref p 'detail #f)) (format "sockbroker: HTTP status ~a" status)))
  (define marks (current-continuation-marks))
  (define errno (and (hash? p) (hash-ref p 'errno #f)))
  (define family (and (hash? p) (hash-ref p 'errno_family #f)))
  (case kind
    [("exn:fail:contract") (exn:fail:contract msg marks)]
    [("exn:fail:network:errno")
     (exn:fail:network:errno msg marks (cons errno (if (equal? family "gai") 'gai 'posix)))]
    ;; A policy refusal is the broker's "permission denied": the errno the kernel gives for it.
    [("permission-denied") (exn:fail:network:errno msg marks (cons 13 'posix))]
    [("exn:fail:network" "not-found" "unauthenticated" "resource-exhausted" "exn:break")
     (exn:fail:network msg marks)]
    [else (exn:fail msg marks)]))

;; ── the session ───────────────────────────────────────────────────────────────────────────────
(define lease-seconds 10)
(define session #f)
(define session-lock (make-semaphore 1))

(define (raw-request method path body call-id with-session?)
  (define hc (take-conn))
  (define headers
    (append (list (string-append "Authorization: Bearer " the-token)
                  "Content-Type: application/json")
            (if with-session? (list (string-append "Sockbroker-Session: " session)) '())
            (if call-id (list (string-append "Sockbroker-Call: " call-id)) '())))
  (define-values (status body-bytes)
    (with-handlers ([(λ (e) #t)
                     (λ (e)
                       (http-conn-abandon! hc)
                       (if (exn:fail:network? e)
                           (no-daemon "the daemon at http://~a:~a broke the connection: ~a" the-host
                                      the-port (exn-message e))
                           (raise e)))])
      (define-values (status-line _headers in)
        (http-conn-sendrecv! hc path #:method method #:headers headers
                             #:data (and body (jsexpr->bytes body))))
      (define bs (port->bytes in))
      (values (string->number (cadr (string-split (bytes->string/latin-1 status-line)))) bs)))
  (give-conn hc)
  (define reply
    (if (zero? (bytes-length body-bytes))
        (hasheq)
        (with-handlers ([exn:fail? (λ (e) (hasheq 'detail (format "sockbroker: unreadable reply: ~s" body-bytes)))])
          (bytes->jsexpr body-bytes #:null #f))))
  (if (= status 200) reply (raise (problem->exn status reply))))

(define (ensure-session)
  (unless session
    (call-with-semaphore
     session-lock
     (λ ()
       (unless session
         (define-values (host port token) (locate))
         (set! the-host host)
         (set! the-port port)
         (set! the-token token)
         (define opened (raw-request "POST" "/v1/sessions" (hasheq 'lease_seconds lease-seconds) #f #f))
         (set! session (hash-ref opened 'session))
         (parameterize ([current-custodian internal-custodian])
           (attach! the-host the-port the-token session)
           (thread keep-alive)))))))

;; The second line behind the attachment: renew the lease while this process lives.
(define (keep-alive)
  (let loop ()
    (sleep (/ lease-seconds 3))
    (with-handlers ([exn:fail? void])
      (raw-request "POST" (format "/v1/sessions/~a/keepalive" session) #f #f #f))
    (loop)))

;; ── custodians ────────────────────────────────────────────────────────────────────────────────
(define base-custodian (current-custodian))
(define daemon-custodians (make-weak-hasheq)) ; Racket custodian → daemon custodian id
(define pending-shutdowns '())                ; daemon custodian ids whose Racket custodian went
(define shutdown-ready (make-semaphore 0))

;; Called in atomic mode by the Racket custodian's shutdown: queue the id for the reaper.
(define (queue-shutdown! id)
  (set! pending-shutdowns (cons id pending-shutdowns))
  (semaphore-post shutdown-ready))

(define (take-pending!)
  (start-atomic)
  (begin0 pending-shutdowns (set! pending-shutdowns '()) (end-atomic)))

(define (run-shutdowns!)
  (for ([id (in-list (take-pending!))])
    (with-handlers ([exn:fail? void])
      (raw-request "DELETE" (format "/v1/custodians/~a" id) #f #f #t))))

(define reaper
  (parameterize ([current-custodian internal-custodian])
    (thread (λ () (let loop () (semaphore-wait shutdown-ready) (run-shutdowns!) (loop))))))

;; The daemon custodian for the current Racket custodian (#f: the session's root).
(define (current-daemon-custodian who)
  (ensure-session)
  (define c (current-custodian))
  (cond
    [(eq? c base-custodian) #f]
    [(hash-ref daemon-custodians c #f)]
    [else
     (define id (hash-ref (raw-request "POST" "/v1/custodians" (hasheq) #f #t) 'custodian))
     (cond
       [(register-custodian-shutdown id queue-shutdown! c)
        (hash-set! daemon-custodians c id)
        id]
       [else
        (raw-request "DELETE" (format "/v1/custodians/~a" id) #f #f #t)
        (raise (exn:fail:contract (format "~a: the custodian has been shut down" who)
                                  (current-continuation-marks)))])]))

;; ── calls ─────────────────────────────────────────────────────────────────────────────────────
;; A call that does not wait: breaks are off while it runs, so it happens whole or not at all.
(define (call method path [body #f])
  (ensure-session)
  (unless (null? pending-shutdowns) (run-shutdowns!)) ; a custodian shut down before this call
  (parameterize-break #f (raw-request method path body #f #t)))

(define call-counter 0)
(define (fresh-call-id)
  (start-atomic)
  (set! call-counter (add1 call-counter))
  (begin0 (format "rkt-~a-~a" (current-inexact-milliseconds) call-counter) (end-atomic)))

;; Break the daemon's call `id`: it either had not performed its operation, or gives it back.
(define (cancel-call! id)
  (parameterize-break #f
    (with-handlers ([exn:fail? void])
      (raw-request "POST" (format "/v1/sessions/~a/calls/~a/cancel" session id) #f #f #t))))

;; A call that may wait. Breaks are enabled while it waits when `enable-break?` is true (the
;; /enable-break variants), or as the caller has them; a break cancels the call in the daemon.
(define (blocking-call method path body #:enable-break? [enable-break? (break-enabled)]
                       #:call-id [id (fresh-call-id)])
  (ensure-session)
  (unless (null? pending-shutdowns) (run-shutdowns!))
  (parameterize-break #f
    (with-handlers ([exn:break? (λ (e) (cancel-call! id) (raise e))])
      (parameterize-break enable-break?
        (raw-request method path body id #t)))))
