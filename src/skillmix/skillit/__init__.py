"""The Skill-It stage: training runs of every strategy (`runs`) and their evaluation and comparison
(`results`). The online mixture itself is a sampler (`skillmix.sampling.SkillItSampler`)."""
