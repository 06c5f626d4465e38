#lang racket/base
;; Racket events over the daemon's Events.Sync (POST /v1/sync), one daemon event each.
;;
;; When a Racket `sync` waits on such an event, a worker thread performs the daemon's blocking
;; sync for it, tagged with a call id. If Racket's sync chooses another event (or is broken, or
;; times out), the NACK cancels that call by id, and the daemon either performs nothing or gives
;; the effect back (the connection to its listener, the datagram to its socket): an event that
;; is not chosen has no effect, as Racket promises. A poll (`sync/timeout 0`) asks the daemon
;; with timeout 0 at once, so polling answers without waiting.
(require "broker.rkt")

(provide broker-evt)

(define (sync-body event timeout)
  (fields 'events (list event) 'timeout (opt timeout)))

;; An event that performs the daemon event `event` (a JSON object, e.g. #hasheq((tcp_accept
;; . ...))) when chosen; its synchronization result is `(convert sync-result)`, computed in the
;; thread that synced (so an error is raised there).
(define (broker-evt event convert)
  (poll-guard-evt
   (λ (poll?) (if poll? (poll-now event convert) (wait-for event convert)))))

(define (in-background thunk)
  (parameterize ([current-custodian internal-custodian]) (thread thunk)))

(define (cancel-unless-chosen nack id)
  (in-background (λ () (sync nack) (cancel-call! id))))

(define (poll-now event convert)
  (define id (fresh-call-id))
  (define reply (blocking-call "POST" "/v1/sync" (sync-body event 0) #:enable-break? #f #:call-id id))
  (if (hash-ref reply 'index #f)
      (nack-guard-evt
       (λ (nack)
         (cancel-unless-chosen nack id)
         (wrap-evt always-evt (λ (_) (convert (hash-ref reply 'result))))))
      never-evt))

(define (wait-for event convert)
  (nack-guard-evt
   (λ (nack)
     (define id (fresh-call-id))
     (define outcome #f)
     (define worker
       (in-background
        (λ ()
          (set! outcome
                (with-handlers ([exn? values])
                  (blocking-call "POST" "/v1/sync" (sync-body event #f) #:enable-break? #f
                                 #:call-id id))))))
     (cancel-unless-chosen nack id)
     (wrap-evt worker
               (λ (_)
                 (if (exn? outcome)
                     (raise outcome)
                     (convert (hash-ref outcome 'result))))))))
