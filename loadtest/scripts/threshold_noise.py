"""The threshold method on equal 0.5% errors at the start of a step (docs/evidence.md):
NEW 50 req/s, OLD 150 req/s, a check every 2 s over a 60 s window, min_requests 100,
max_error_rate 1%, max_error_rate_increase 0.5%, rollback at 3 failed checks in a row."""
import numpy as np
rng=np.random.default_rng(1)
R=200000; checks=45; p=0.005
fails=np.zeros(checks); roll=0; roll_early=0
ne=np.zeros(R); nn=np.zeros(R); oe=np.zeros(R); on=np.zeros(R)
per=[]  # per-2s increments kept for 60s window
hist=[]
streak=np.zeros(R,int); rolled=np.zeros(R,bool); first_roll=np.full(R,-1)
for c in range(checks):
    a_n=rng.poisson(100,R); a_o=rng.poisson(300,R)
    e_n=rng.binomial(a_n,p); e_o=rng.binomial(a_o,p)
    hist.append((a_n,e_n,a_o,e_o))
    if len(hist)>30: hist.pop(0)
    N=sum(h[0] for h in hist); EN=sum(h[1] for h in hist); O=sum(h[2] for h in hist); EO=sum(h[3] for h in hist)
    ok=N>=100
    f=ok&((EN/np.maximum(N,1)>0.01)|((O>=100)&(EN/np.maximum(N,1)-EO/np.maximum(O,1)>0.005)))
    fails[c]=f.mean()
    streak=np.where(f,streak+1,np.where(ok,0,streak))
    newly=(streak>=3)&~rolled
    first_roll[newly]=c; rolled|=newly
print("P(fail) at checks 1..6:", np.round(fails[:6],4), " at check 30+:", np.round(fails[30:33],5))
print("P(rollback within 45 checks):", rolled.mean(), " of which in the first 5 checks:", ((first_roll>=0)&(first_roll<5)).mean())
