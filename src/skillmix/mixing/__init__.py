"""The Skill-It stage: training runs of every strategy (`runs`) and their evaluation and comparison
(`results`), and the samplers of Skill-It and the curricula (`samplers`)."""
