#lang racket/base
;; The differential test: every behaviour of behaviours.rkt over racket/tcp + racket/udp and over
;; sockbroker/tcp + sockbroker/udp, outcome against outcome. Where sockbroker departs from Racket
;; 8.7 on purpose (the seed's documentation wins, docs/semantics.md), `departures` names the
;; behaviour and both outcomes, and the test checks that exact difference.
;;
;; Run through the pytest wrapper (test_racket_dropin.py), which starts a daemon and sets
;; SOCKBROKER_URL, SOCKBROKER_TOKEN_FILE and PLTCOLLECTS; by hand, with those set:
;;   raco test tests/racket_client/differential.rkt
(require racket/list
         racket/pretty
         rackunit
         "behaviours.rkt"
         "impl-broker.rkt"
         "impl-racket.rkt"
         (for-syntax racket/base "names.rkt"))

;; Each behaviour runs under a custodian of its own (shut down after it) and at most this long.
(define limit 20)

(define (run impl behaviour)
  (define c (make-custodian))
  (define result 'timeout)
  (define th (parameterize ([current-custodian c])
               (thread (λ () (set! result (outcome-of (λ () (behaviour impl))))))))
  (sync/timeout limit th)
  (custodian-shutdown-all c)
  (if (and (list? result) (= (length result) 1)) (car result) result))

;; behaviour → (list racket-outcome sockbroker-outcome why): where sockbroker departs from
;; Racket 8.7 on purpose. Both outcomes are checked exactly, so any other change still fails.
(define departures
  (hasheq
   'listener-close
   (list '((raise exn:fail:network:errno (111 . posix)) (raise exn:fail:contract #f)
           (raise exn:fail:contract #f) (raise exn:fail:contract #f))
         '((raise exn:fail:network:errno (111 . posix)) (raise exn:fail:network #f)
           (raise exn:fail:network #f) (raise exn:fail:network #f))
         "a closed listener: Racket 8.7 raises contract errors, its docs say exn:fail:network")
   'udp-errors
   (list '((raise exn:fail:network #f) (raise exn:fail:network #f) (raise exn:fail:contract #f)
           (raise exn:fail:contract #f) (raise exn:fail:contract #f) (raise exn:fail:contract #f)
           (raise exn:fail:contract #f) (raise exn:fail:contract #f) (raise exn:fail:contract #f)
           (raise exn:fail:contract #f) (void) (raise exn:fail:network #f)
           (raise exn:fail:network #f) (raise exn:fail:network #f) (raise exn:fail:network #f))
         '((raise exn:fail:network #f) (raise exn:fail:network #f) (raise exn:fail:network #f)
           (raise exn:fail:contract #f) (raise exn:fail:contract #f) (raise exn:fail:contract #f)
           (raise exn:fail:contract #f) (raise exn:fail:contract #f) (raise exn:fail:contract #f)
           (raise exn:fail:contract #f) (void) (raise exn:fail:network #f)
           (raise exn:fail:network #f) (raise exn:fail:network #f) (raise exn:fail:network #f))
         "udp-bind! on a bound socket: Racket 8.7 raises a contract error, its docs say exn:fail:network")
   'custodians
   (list '((raise exn:fail:network:errno (111 . posix)) (raise exn:fail #f) (void))
         '((raise exn:fail:network:errno (111 . posix)) (raise exn:fail:contract #f)
           (raise exn:fail:network #f))
         (string-append "a shut-down custodian: DESIGN §2 makes a new handle under it a contract "
                        "error, and closes its UDP sockets (Racket 8.7 leaves them usable)"))))

(define outcomes (make-hasheq))

(for ([b (in-list behaviours)])
  (define name (car b))
  (define expected (run racket-impl (cdr b)))
  (define actual (run broker-impl (cdr b)))
  (hash-set! outcomes name (list expected actual))
  (test-case (symbol->string name)
    (check-not-equal? expected 'timeout "racket/tcp itself timed out")
    (define departure (hash-ref departures name #f))
    (cond
      [departure
       (check-equal? expected (car departure) (string-append "Racket's side: " (caddr departure)))
       (check-equal? actual (cadr departure) (string-append "sockbroker's side: " (caddr departure)))]
      [else (check-equal? actual expected)])))

;; Every binding of racket/tcp and racket/udp is there, with Racket's arity.
(test-case "same bindings, same arities"
  (define (exports mod)
    (define-values (vars _stx) (module->exports mod))
    (sort (map car (cdr (assv 0 vars))) symbol<?))
  (check-equal? (exports 'sockbroker/tcp) (exports 'racket/tcp))
  (check-equal? (exports 'sockbroker/udp) (exports 'racket/udp))
  (for ([(name r) (in-hash racket-impl)])
    (check-equal? (procedure-arity (hash-ref broker-impl name)) (procedure-arity r) (symbol->string name))))

;; What the seed's docs promise and Racket 8.7 does not check (it waits for a datagram instead).
(test-case "udp-receive! refuses an immutable byte string"
  (define u ((hash-ref broker-impl 'udp-open-socket)))
  (check-exn exn:fail:contract? (λ () ((hash-ref broker-impl 'udp-receive!) u #"immutable")))
  ((hash-ref broker-impl 'udp-close) u))

(module+ main
  (for ([b (in-list behaviours)])
    (printf "~a\n  racket:     ~s\n  sockbroker: ~s\n" (car b)
            (car (hash-ref outcomes (car b))) (cadr (hash-ref outcomes (car b))))))
