"""Probe: how fast does a fresh tiny world model learn to read the motion words at pure noise (t = 999)?

Trains only at t = 999 on four red-square prompts (one per direction, correct renders), so the best
output is the prompt's mean clip; prints the predicted clips' centroid travel every 50 steps.
Options (words on the command line): ``frozen`` (text encoder frozen), ``noqk`` (no q/k norms),
``pool`` (a pooled-text term added to the timestep embedding), ``p4`` (patch 4), ``eps``
(epsilon prediction), ``steps=N``. Notes in benchmarks/RESULTS.md ("Base model: ... notes").

    python benchmarks/probe_high_noise.py steps=500
"""
import sys,time,numpy as np,torch
from ipo_ray.config import load_config
from ipo_ray.policy import T2VPolicy
from ipo_ray.pretrain import world_batch
from ipo_ray.codec import frames_to_unit
torch.set_num_threads(1); torch.manual_seed(0); rng=np.random.default_rng(0)
cfg=load_config(str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'configs' / 'world-tiny.yaml'))
if 'p4' in sys.argv: cfg.model.tiny.patch_size=4
if 'eps' in sys.argv: cfg.model.prediction_type='epsilon'
p=T2VPolicy.build_tiny(cfg.model)
if 'pool' in sys.argv:
    tm=p.transformer; tm.text_pool_proj=torch.nn.Linear(cfg.model.tiny.text_dim, cfg.model.tiny.time_embed_dim)
    torch.nn.init.zeros_(tm.text_pool_proj.weight); torch.nn.init.zeros_(tm.text_pool_proj.bias)
    st={}
    tm.register_forward_pre_hook(lambda m,a,kw: st.__setitem__('pool', kw['encoder_hidden_states'].mean(1)), with_kwargs=True)
    tm.time_embedding.register_forward_hook(lambda m,a,out: out + tm.text_pool_proj(st['pool']))
if 'noqk' in sys.argv:
    for b in p.transformer.transformer_blocks: b.attn1.norm_q=None; b.attn1.norm_k=None; p.text_encoder.requires_grad_(True).train()
freeze_text = 'frozen' in sys.argv
if freeze_text: p.text_encoder.requires_grad_(False)
params=[q for q in list(p.transformer.parameters())+list(p.text_encoder.parameters()) if q.requires_grad]
opt=torch.optim.AdamW(params,lr=1e-3,weight_decay=0)
prompts=[f'a red square {m}' for m in ['moves from left to right','moves from right to left','falls down','rises up']]
t0=time.time()
for step in range(1,int(dict(a.split('=') for a in sys.argv[1:] if '=' in a).get('steps',200))+1):
    ps,v=world_batch(rng,prompts,16,cfg,0.0)
    x0=frames_to_unit(v); c=p.encode_prompts_trainable(ps)
    noise=torch.randn_like(x0); tt=torch.full((16,),999)
    l=p.training_error(x0,c,tt,noise).mean(); opt.zero_grad(); l.backward(); opt.step()
    if step%50==0:
        with torch.no_grad():
            cc=p.encode_prompts(prompts); n=torch.randn(4,*p.latent_shape())
            v=p.transformer(hidden_states=n,encoder_hidden_states=cc,timestep=torch.full((4,),999),return_dict=False)[0]
            x=-v; red=((x[:,:,0]+1)/2).clamp(min=0)**2; ys=torch.arange(16.)
            cx=(red.sum(-2)*ys).sum(-1)/red.sum((-1,-2)); cy=(red.sum(-1)*ys).sum(-1)/red.sum((-1,-2))
            print(step,'loss %.4f'%l.item(),'%.1fs'%(time.time()-t0),'dx l2r %.1f r2l %.1f  dy fall %.1f rise %.1f'%((cx[0,-1]-cx[0,0]).item(),(cx[1,-1]-cx[1,0]).item(),(cy[2,-1]-cy[2,0]).item(),(cy[3,-1]-cy[3,0]).item()),flush=True)
